"""The CUDA code paths: reduced-precision autocast, xformers, chunked heads, many windows, `Reconstructor`.

Marked ``gpu`` (outside the default run) and skipped without a CUDA device; on a GPU machine
``benchmarks/gpu_check.sh`` runs them (``pytest -m gpu tests/test_gpu.py``). Each comparison
prints the differences it measured, so a run's log keeps the figures and not only the verdict.

Bounds are about ten times what the same comparison gives under CPU autocast with the shipped
model (bf16: 5e-4 to 1.7e-3 relative, fp16: about 7 times less; features 2e-6 mean 1 - cosine in
bf16): loose enough for other kernels, tight enough that a wrong cast or a broken kernel fails.
"""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from iggt.loading import load_model
from iggt.model import layers
from iggt.model.iggt import IGGT, Predictions
from iggt.model.instance_head import WindowCrossAttention, WindowSelfAttentionStage
from iggt.reconstruct import DEFAULT_CHECKPOINT, Reconstructor
from iggt.views import load_views, preprocess

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run benchmarks/gpu_check.sh there)"),
]

EXAMPLES = Path(__file__).resolve().parents[1] / "assets" / "examples"
GEOMETRY = ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf")
AUTOCAST_BOUNDS = {  # relative L2 difference per output; mean (1 - cosine) of the per-pixel features
    torch.bfloat16: {**dict.fromkeys(GEOMETRY, 1e-2), "instance_features": 1e-3},
    torch.float16: {**dict.fromkeys(GEOMETRY, 2e-3), "instance_features": 2e-4},
}
FP32_BOUND = 1e-3
"""The same model in fp32 on two devices, or chunked differently: summation order only."""


@pytest.fixture(autouse=True)
def true_fp32():
    """Reference runs in real fp32: no TF32 in matrix products or convolutions."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.fixture(scope="module")
def shipped() -> IGGT:
    return load_model(DEFAULT_CHECKPOINT).cuda()


def example_images(count: int, size: int = 112) -> torch.Tensor:
    """``count`` views ``[S, 3, H, W]`` at the model's size: the synthetic example scenes' views,
    then their mirror images where more are needed."""
    views = [view for folder in sorted(EXAMPLES.glob("synthetic-*")) for view in load_views(folder)]
    images, _, _ = preprocess(views[:count], "crop", size)
    return torch.cat([images, images.flip(-1)])[:count]


def forward(model: IGGT, images: torch.Tensor, dtype: torch.dtype = torch.float32) -> Predictions:
    device = next(model.parameters()).device
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        return model(images.to(device))


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float().cpu(), b.float().cpu()
    return float((a - b).norm() / b.norm())


def differences(out: Predictions, reference: Predictions) -> dict[str, float]:
    """Relative L2 difference of each geometric output; mean (1 - cosine) of the instance features."""
    found = {name: relative(getattr(out, name), getattr(reference, name)) for name in GEOMETRY}
    a = F.normalize(out.instance_features.float().cpu(), dim=2)
    b = F.normalize(reference.instance_features.float().cpu(), dim=2)
    found["instance_features"] = float((1 - (a * b).sum(dim=2)).mean())
    return found


def assert_within(found: dict[str, float], bounds: dict[str, float] | float, what: str) -> None:
    print(f"{what}: " + ", ".join(f"{name} {value:.2e}" for name, value in found.items()))
    limits = bounds if isinstance(bounds, dict) else dict.fromkeys(found, bounds)
    too_far = {name: value for name, value in found.items() if not value <= limits[name]}
    assert not too_far, f"{what}: beyond the bounds {limits}: {too_far}"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_autocast_stays_close_to_fp32(shipped, dtype):
    images = example_images(6)
    reference = forward(shipped, images)
    out = forward(shipped, images, dtype)
    assert all(getattr(out, name).dtype == torch.float32 for name in GEOMETRY)  # heads stay in fp32
    assert_within(differences(out, reference), AUTOCAST_BOUNDS[dtype], f"{dtype} autocast vs fp32")


def test_cuda_matches_cpu_in_fp32(shipped):
    images = example_images(4)
    on_cpu = copy.deepcopy(shipped).cpu()
    assert_within(differences(forward(shipped, images), forward(on_cpu, images)), FP32_BOUND, "CUDA vs CPU, fp32")


def test_more_than_twelve_views_through_the_chunked_heads(shipped):
    """18 views through heads chunked by 4 (the preset) and by 12 (the release) give what one
    chunk of all views gives: chunking changes memory, not results."""
    images = example_images(18)

    def chunked_by(chunk: int) -> IGGT:
        model = IGGT(shipped.config.replace(frames_chunk_size=chunk)).cuda().eval()
        model.load_state_dict(shipped.state_dict())
        return model

    whole = forward(chunked_by(18), images)
    assert whole.depth.shape[1] == 18 and torch.isfinite(whole.instance_features).all()
    for chunk in (shipped.config.frames_chunk_size, 12):
        assert_within(differences(forward(chunked_by(chunk), images), whole), FP32_BOUND,
                      f"heads in chunks of {chunk} vs one chunk of 18")


@pytest.mark.parametrize("stage, width, maps, size", [
    (WindowSelfAttentionStage, 128, 24, (224, 296)),  # SwinSA of iggt-1b at 518x392: 24 x 1036 windows x 4 heads
    (WindowCrossAttention, 256, 64, (112, 148)),      # SwinCA: 64 x 266 windows x 4 heads
], ids=["self-attention", "cross-attention"])
def test_window_attention_with_many_windows(stage, width, maps, size):
    """The instance head's window attentions at the released width with more windows x heads in
    one batch than a CUDA grid dimension holds (65535): the first, a middle and the last map
    agree with the CPU."""
    torch.manual_seed(0)
    module = stage(width, hidden=width // 4).eval()
    inputs = [torch.randn(maps, width, *size) for _ in range(2 if stage is WindowCrossAttention else 1)]
    with torch.inference_mode():
        on_gpu = copy.deepcopy(module).cuda()(*(x.cuda() for x in inputs)).cpu()
        for index in (0, maps // 2, maps - 1):
            on_cpu = module(*(x[index:index + 1] for x in inputs))
            found = relative(on_gpu[index:index + 1], on_cpu)
            print(f"{stage.__name__} map {index} of {maps}: relative difference {found:.2e}")
            assert found < FP32_BOUND


def test_xformers_matches_sdpa(shipped, monkeypatch):
    pytest.importorskip("xformers.ops", reason="xformers is not installed: attention runs on PyTorch's SDPA")
    assert layers._xformers_attention is not None
    q, k, v = (torch.randn(2, 8, 1500, 64, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    images = example_images(6)
    through_xformers, model_xformers = layers.attention(q, k, v), forward(shipped, images, torch.bfloat16)
    monkeypatch.setattr(layers, "_xformers_attention", None)
    through_sdpa, model_sdpa = layers.attention(q, k, v), forward(shipped, images, torch.bfloat16)
    assert relative(through_xformers, through_sdpa) < 1e-2
    assert_within(differences(model_xformers, model_sdpa), AUTOCAST_BOUNDS[torch.bfloat16], "xformers vs SDPA, bf16")


def test_reconstructor_end_to_end_on_cuda():
    """Photos to a clustered scene on the GPU in bf16, close to the CPU's fp32 reconstruction."""
    from iggt.instances import ClusteringConfig, segment_instances

    folder = EXAMPLES / "synthetic-5"
    on_gpu = Reconstructor(load_model(DEFAULT_CHECKPOINT), device="cuda")
    assert on_gpu.dtype == torch.bfloat16
    scene = on_gpu(folder)
    reference = Reconstructor(load_model(DEFAULT_CHECKPOINT), device="cpu")(folder)
    for name in ("depth", "world_points", "features", "extrinsics"):
        value = getattr(scene, name)
        assert value.shape == getattr(reference, name).shape and value.dtype == getattr(reference, name).dtype
        assert torch.isfinite(torch.from_numpy(value)).all(), name
    found = {name: relative(torch.from_numpy(getattr(scene, name)), torch.from_numpy(getattr(reference, name)))
             for name in ("depth", "world_points", "extrinsics")}
    assert_within(found, 2e-2, "Reconstructor bf16 on CUDA vs fp32 on CPU")
    instances = segment_instances(scene, ClusteringConfig.from_preset("small"))
    assert instances.count >= 2
