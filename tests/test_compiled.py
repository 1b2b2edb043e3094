"""tools.compiled: the occupancy rules, the SASS reading, and each check failing on a kernel that
plants its violation (compiled for sm_90 here, no GPU), passing on the same kernel done right."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tools import compiled

ROOT = Path(__file__).resolve().parents[1]


def nvidia_tools_found() -> bool:
    try:
        return bool(compiled.tool("cuobjdump") and compiled.tool("nvdisasm"))
    except SystemExit:
        return False


pytestmark = pytest.mark.skipif(not nvidia_tools_found(), reason="needs cuobjdump and nvdisasm (Triton's NVIDIA backend "
                                "ships them)")


@pytest.mark.parametrize("regs, smem, warps, blocks, limit", [
    (64, 0, 4, 8, "regs"),  # 64 x 128 threads = 8192 registers a block: 65536 / 8192
    (204, 4096, 4, 2, "regs"),  # 208 after rounding to 8 per thread: 2 warps per scheduler
    (32, 0, 4, 16, "warps+regs"),  # 64 warps an SM: 16 blocks of 4
    (32, 0, 1, 32, "blocks"),  # at most 32 blocks an SM
    (40, 100 * 1024, 4, 2, "smem"),  # 228 KB an SM, each block 100 KB + 1 KB reserved
])
def test_occupancy_follows_the_cuda_rules_on_sm_90(regs, smem, warps, blocks, limit):
    got_blocks, occupancy, got_limit = compiled.occupancy(compiled.ARCHS[90], regs, smem, warps)
    assert (got_blocks, got_limit) == (blocks, limit)
    assert occupancy == pytest.approx(blocks * warps / 64)


def test_sass_facts_counts_instructions_and_access_widths():
    sass = textwrap.dedent("""
        /*0090*/                   LDG.E.128 R4, desc[UR4][R2.64] ;
        /*00a0*/              @!P0 LDG.E.U16 R9, desc[UR4][R6.64] ;
        /*00b0*/                   LDG.E R10, desc[UR4][R6.64] ;
        /*00c0*/                   HGMMA.64x64x16.F32.BF16 R24, gdesc[UR8], RZ, !UPT ;
        /*00d0*/                   STL.64 [R1], R4 ;
        /*00e0*/               @P1 STG.E.64 desc[UR4][R2.64], R4 ;
        /*00f0*/                   UTMALDG.2D [UR8], [UR10] ;
    """)
    facts = compiled.sass_facts(sass)
    assert facts["loads"] == {128: 1, 16: 1, 32: 1} and facts["stores"] == {64: 1}
    assert (facts["hgmma"], facts["hmma"], facts["stl"], facts["tma"]) == (1, 0, 1, 1)


PLANTED = textwrap.dedent('''
    import json, os, sys
    os.environ["TRITON_INTERPRET"] = "0"
    sys.path.insert(0, sys.argv[1])
    import torch, triton, triton.language as tl
    from tools import compiled

    @triton.jit
    def copy_rows(X, Y, stride, N, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        cols = tl.arange(0, BLOCK)
        x = tl.load(X + row * stride + cols, mask=cols < N)
        tl.store(Y + row * stride + cols, x, mask=cols < N)

    @triton.jit
    def scale_by_sum(X, BLOCK: tl.constexpr):
        x = tl.load(X + tl.arange(0, BLOCK))
        tl.store(X + tl.arange(0, BLOCK), x * tl.sum(x * x, axis=0) + tl.sum(x, axis=0) * x)

    @triton.jit
    def matmul_tile(A, B, C, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        m, n, k = tl.arange(0, BLOCK_M), tl.arange(0, BLOCK_N), tl.arange(0, BLOCK_K)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for step in range(0, 4096, BLOCK_K):
            a = tl.load(A + m[:, None] * 4096 + step + k[None, :])
            b = tl.load(B + (step + k[:, None]) * BLOCK_N + n[None, :])
            acc += tl.dot(a, b)
        tl.store(C + m[:, None] * BLOCK_N + n[None, :], acc)

    def bf16(*shape):
        return torch.empty(shape, dtype=torch.bfloat16)

    cases = {
        "narrow": lambda: copy_rows[(8,)](bf16(8, 50257), bf16(8, 50257), 50257, 50257, BLOCK=65536, num_warps=8),
        "wide": lambda: copy_rows[(8,)](bf16(8, 4096), bf16(8, 4096), 4096, 4096, BLOCK=4096, num_warps=8),
        "spill": lambda: scale_by_sum[(1,)](torch.empty(16384), BLOCK=16384, num_warps=1),
        "no_spill": lambda: scale_by_sum[(1,)](torch.empty(1024), BLOCK=1024, num_warps=4),
        "hmma": lambda: matmul_tile[(1,)](bf16(32, 4096), bf16(4096, 64), torch.empty(32, 64),
                                         BLOCK_M=32, BLOCK_N=64, BLOCK_K=64, num_warps=4),
        "hgmma": lambda: matmul_tile[(1,)](bf16(64, 4096), bf16(4096, 64), torch.empty(64, 64),
                                          BLOCK_M=64, BLOCK_N=64, BLOCK_K=64, num_warps=4),
        "smem": lambda: matmul_tile[(1,)](bf16(256, 4096), bf16(4096, 256), torch.empty(256, 256),
                                         BLOCK_M=256, BLOCK_N=256, BLOCK_K=128, num_warps=8, num_stages=4),
        "error": lambda: matmul_tile[(1,)](bf16(64, 4096), bf16(4096, 64), torch.empty(64, 64),
                                          BLOCK_M=64, BLOCK_N=64, BLOCK_K=3, num_warps=4),
    }
    cases["no_tcgen05"], cases["tcgen05"] = cases["hmma"], cases["hgmma"]  # the same dots for sm_100
    found = {}
    for name, launch in cases.items():
        records = compiled.record_launches(launch, 100 if "tcgen05" in name else 90, "planted", "bfloat16",
                                           skip_pruned=True)
        for r in records:
            r.memory_bound = r.model_shape = True
        found[name] = sorted({line.split(":")[0] for line in compiled.violations(records)})
    print(json.dumps(found))
''')


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    script = tmp_path_factory.mktemp("planted") / "planted.py"  # Triton reads a kernel's source from its file
    script.write_text(PLANTED)
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_DEFAULT_FP_FUSION": "1"}
    done = subprocess.run([sys.executable, str(script), str(ROOT)], capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("bad, good, check", [
    ("narrow", "wide", "NARROW"),  # rows of 50257 bf16: no 16-byte access can be proven aligned
    ("spill", "no_spill", "SPILL"),  # 16384 fp32 values live across a reduction in one warp
    ("hmma", "hgmma", "NO-WGMMA"),  # a 32-row bf16 dot on sm_90 is mma.sync; 64 rows make a warpgroup MMA
    ("no_tcgen05", "tcgen05", "NO-TCGEN05"),  # on sm_100 the 64-row dot is a tcgen05 MMA, the 32-row one is not
    ("smem", "hgmma", "SMEM"),  # 256 x 256 x 128 bf16 tiles, 4 stages: more than a block's 227 KB
    ("error", "hgmma", "COMPILE"),  # a dot with K = 3 does not compile
])
def test_each_check_fails_on_its_planted_violation_and_passes_without_it(planted, bad, good, check):
    assert check in planted[bad], planted
    assert planted[good] == [], planted


def test_cuda_kernels_are_judged_at_their_launch_bounds(tmp_path):
    import cuda_toolkit

    home, _ = cuda_toolkit.find_cuda_toolkit()
    if home is None:
        pytest.skip("no CUDA toolkit (nvcc) found")
    source = tmp_path / "planted.cu"
    source.write_text("__global__ void __launch_bounds__(512) bounded(float* x) { x[threadIdx.x] *= 2.f; }\n"
                      "__global__ void unbounded(float* x) { x[threadIdx.x] *= 3.f; }\n")
    records = {r.kernel.split("(")[0]: r for r in compiled.compile_cuda(source, 90, f"{home}/bin/nvcc", [])}
    assert (records["bounded"].max_threads, records["bounded"].warps) == (512, 16)
    assert (records["unbounded"].max_threads, records["unbounded"].warps) == (None, 8)
    assert records["unbounded"].config == "no launch bounds: at 256 threads"
    assert compiled.violations(list(records.values())) == []
