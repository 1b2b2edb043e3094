import common

import gpt_kernels  # noqa: F401  (selects the Triton interpreter on GPU-less machines before any kernel is defined)


def pytest_addoption(parser):
    parser.addoption("--quick", action="store_true", default=False,
                     help="the one-call GPU check's benchmark run: each op's quick shapes, fewer providers and rounds")


def pytest_configure(config):
    common.QUICK = config.getoption("--quick")  # before collection, where the benchmark files read it
