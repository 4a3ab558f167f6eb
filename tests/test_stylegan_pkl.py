"""Loading official StyleGAN2-ADA pickles through the allowlist unpickler.

The tests write tiny pickles in the official format themselves: while pickling, fake
``torch_utils.persistence`` and ``dnnlib.util`` modules stand in for NVlabs' code, so every network is
stored as ``_reconstruct_persistent_obj(meta)`` with its ``module_src``, exactly as their training loop
writes it. The fakes are gone again before the loader runs.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import os
import pickle
import subprocess
import sys
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import ModelLoadError
from core.gan.stylegan2 import StyleGAN2Generator
from core.models.io import load_generator
from core.models.stylegan_pkl import load_stylegan2_pkl

MODULE_SRC = "raise SystemExit('module_src was executed')\n"  # what the real pickles exec on load
OFFICIAL_CLASS = {"StyleGAN2Generator": "Generator"}
OFFICIAL_CHILD = {"mapping_net": "mapping", "synthesis_net": "synthesis"}


class EasyDict(dict):
    pass


def _reconstruct_persistent_obj(meta):  # never called: the loader must not import the real one
    raise AssertionError("the fake persistence module was used at load time")


# pickle stores both by reference to these module names, as it would NVlabs' originals.
EasyDict.__module__ = "dnnlib.util"
_reconstruct_persistent_obj.__module__ = "torch_utils.persistence"


class Persistent:
    """Pickles like a ``torch_utils.persistence`` object: a reconstruct call carrying its meta dict."""

    def __init__(self, meta):
        self.meta = meta

    def __reduce__(self):
        return _reconstruct_persistent_obj, (self.meta,)


class Reduce:
    """Pickles as ``func(*args)``: how a malicious pickle runs code on load."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@contextlib.contextmanager
def official_modules():
    """Make ``torch_utils.persistence`` and ``dnnlib.util`` importable for pickle while writing."""
    fakes = {
        name: types.ModuleType(name)
        for name in ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util")
    }
    fakes["torch_utils.persistence"]._reconstruct_persistent_obj = _reconstruct_persistent_obj
    fakes["dnnlib.util"].EasyDict = EasyDict
    saved = {name: sys.modules.get(name) for name in fakes}
    sys.modules.update(fakes)
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def module_state(module: torch.nn.Module, children: dict, init_kwargs: dict) -> dict:
    # The __dict__ of a torch 1.x module, as torch_utils.persistence puts it in meta['state'].
    hooks = ("_backward_hooks", "_forward_hooks", "_forward_pre_hooks", "_state_dict_hooks")
    return {
        "training": False,
        "_parameters": OrderedDict(module._parameters),
        "_buffers": OrderedDict(module._buffers),
        "_non_persistent_buffers_set": set(),
        **{hook: OrderedDict() for hook in (*hooks, "_load_state_dict_pre_hooks")},
        "_modules": OrderedDict(children),
        "_init_args": (),
        "_init_kwargs": EasyDict(init_kwargs),
        "act_gain": np.float64(np.sqrt(2)),  # official layers keep gains as numpy scalars
    }


def persistent_tree(module: torch.nn.Module, module_src: str, init_kwargs: dict) -> Persistent:
    children = {
        OFFICIAL_CHILD.get(name, name): persistent_tree(child, module_src, {})
        for name, child in module._modules.items()
    }
    class_name = type(module).__name__
    meta = dict(
        type="class",
        version=6,
        module_src=module_src,
        class_name=OFFICIAL_CLASS.get(class_name, class_name),
        state=module_state(module, children, init_kwargs),
    )
    return Persistent(meta)


def official_kwargs(G: StyleGAN2Generator, **overrides) -> dict:
    cfg = G.cfg
    kwargs = dict(
        z_dim=cfg.z_dim,
        w_dim=cfg.w_dim,
        mapping_kwargs=EasyDict(num_layers=cfg.mapping_layers),
        synthesis_kwargs=EasyDict(
            channel_base=cfg.channel_base, channel_max=cfg.channel_max, num_fp16_res=4, conv_clamp=256
        ),
        c_dim=0,
        img_resolution=cfg.img_resolution,
        img_channels=3,
    )
    return kwargs | overrides


def write_pkl(path, G, *, module_src=MODULE_SRC, protocol=4, kwargs=None, **extra):
    with official_modules():
        G_ema = persistent_tree(G, module_src, kwargs or official_kwargs(G))
        data = dict(
            training_set_kwargs=dict(
                class_name="training.dataset.ImageFolderDataset", path="x.zip", resolution=16
            ),
            G=G_ema,
            D=Persistent(
                dict(type="class", version=6, module_src=module_src, class_name="Discriminator", state={})
            ),
            G_ema=G_ema,
            augment_pipe=None,
            **extra,
        )
        path.write_bytes(pickle.dumps(data, protocol=protocol))
    return path


@pytest.fixture
def source():
    torch.manual_seed(1)
    G = StyleGAN2Generator(
        z_dim=16,
        w_dim=16,
        img_resolution=16,
        channel_base=128,
        channel_max=16,
        mapping_layers=2,
        conv_clamp=256,
    )
    with torch.no_grad():  # make the noise and w_avg matter, unlike a freshly initialised net
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.3)
        G.mapping_net.w_avg.normal_()
    return G.eval().requires_grad_(False)


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_loads_official_pickle_and_renders_the_same(tmp_path, source, protocol):
    path = write_pkl(tmp_path / "net.pkl", source, protocol=protocol)
    G = load_stylegan2_pkl(path)
    assert G.num_ws == source.num_ws == 6  # b4: conv1; b8, b16: conv0, conv1; last toRGB
    assert G.cfg.conv_clamp == 256 and G.cfg.mapping_layers == 2
    ws = torch.randn(2, G.num_ws, G.w_dim, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(G.synthesis(ws), source.synthesis(ws), atol=1e-6)
    z = torch.randn(2, G.z_dim)
    assert torch.allclose(G.mapping(z), source.mapping(z), atol=1e-6)
    assert torch.equal(G.mean_w(), source.mapping_net.w_avg)
    assert not G.training and not any(p.requires_grad for p in G.parameters())


def test_load_generator_dispatches_pkl(tmp_path, source):
    G = load_generator(write_pkl(tmp_path / "net.pkl", source))
    assert isinstance(G, StyleGAN2Generator)


def test_module_src_is_never_executed(tmp_path, source):
    marker = tmp_path / "pwned"
    module_src = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
    load_stylegan2_pkl(write_pkl(tmp_path / "net.pkl", source, module_src=module_src))
    assert not marker.exists()
    exec(module_src)  # the payload itself works: only the loader kept it from running
    assert marker.exists()


@pytest.mark.parametrize(
    ("func", "refused"),
    [(os.system, "system"), (builtins.exec, "builtins.exec"), (subprocess.call, "subprocess.call")],
)
@pytest.mark.parametrize("where", ["top", "deep"])
def test_code_in_pickle_is_refused(tmp_path, source, func, refused, where):
    marker = tmp_path / "pwned"
    args = {
        builtins.exec: (f"open({str(marker)!r}, 'w').close()",),
        os.system: (f"touch {marker}",),
        subprocess.call: (["touch", str(marker)],),
    }[func]
    if where == "deep":
        source.synthesis_net.b4.conv1._buffers["evil"] = Reduce(func, *args)
        path = write_pkl(tmp_path / "model.pkl", source)
    else:
        path = write_pkl(tmp_path / "model.pkl", source, evil=Reduce(func, *args))
    with pytest.raises(ModelLoadError, match=r"model\.pkl: refused to load: the pickle asks for") as err:
        load_stylegan2_pkl(path)
    assert refused in str(err.value) and "allowlist" in str(err.value)
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated")
def test_tensor_view_past_its_storage_is_refused(tmp_path, source):
    small = torch.zeros(2).storage()  # 2 elements, read below as a view of 16
    source.mapping_net._buffers["w_avg"] = Reduce(
        torch._utils._rebuild_tensor_v2, small, 0, (16,), (1,), False, OrderedDict()
    )
    with pytest.raises(ModelLoadError, match=r"net\.pkl.*runs past its storage"):
        load_stylegan2_pkl(write_pkl(tmp_path / "net.pkl", source))


@pytest.mark.parametrize(
    "content", [b"", b"not a pickle at all", b"\x80\x04\x95garbage", bytes(range(256)) * 4]
)
def test_garbage_is_refused(tmp_path, content):
    path = tmp_path / "junk.pkl"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=r"junk\.pkl"):
        load_stylegan2_pkl(path)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_corrupted_bytes_only_ever_raise_model_load_error(tmp_path, source):
    good = write_pkl(tmp_path / "good.pkl", source).read_bytes()
    want = load_stylegan2_pkl(tmp_path / "good.pkl")
    rng = np.random.default_rng(0)
    path = tmp_path / "bad.pkl"
    refused = loaded = 0
    for _ in range(100):
        data = bytearray(good)
        for pos in rng.integers(0, len(data), size=rng.integers(1, 4)):
            data[pos] = rng.integers(0, 256)
        path.write_bytes(bytes(data))
        try:
            G = load_stylegan2_pkl(path)
        except ModelLoadError as e:
            assert "bad.pkl" in str(e)  # the message names the file
            refused += 1
        else:  # a flip in a weight byte still loads: then it is the same network, weights aside
            assert G.config_dict() == want.config_dict()
            loaded += 1
    assert refused > 0 and refused + loaded == 100, (refused, loaded)


def test_truncated_pickle_is_refused(tmp_path, source):
    path = write_pkl(tmp_path / "cut.pkl", source)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelLoadError, match=r"cut\.pkl is not a readable"):
        load_stylegan2_pkl(path)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        load_stylegan2_pkl(tmp_path / "absent.pkl")


def test_conditional_kwargs_on_unconditional_weights_are_refused(tmp_path, source):
    path = write_pkl(tmp_path / "cond.pkl", source, kwargs=official_kwargs(source, c_dim=10))
    with pytest.raises(ModelLoadError, match=r"cond\.pkl"):
        load_stylegan2_pkl(path)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(synthesis_kwargs=EasyDict(architecture="resnet")), "architecture='resnet'"),
        (dict(mapping_kwargs=EasyDict(num_layers=2, activation="relu")), "activation='relu'"),
        (dict(synthesis_kwargs=EasyDict(channel_base=128, channel_max=32)), "weights do not match"),
        (dict(img_channels=1), "only RGB"),
        (dict(z_dim="16"), "is not an integer"),
    ],
)
def test_unsupported_or_mismatched_kwargs_are_refused(tmp_path, source, overrides, message):
    path = write_pkl(tmp_path / "net.pkl", source, kwargs=official_kwargs(source, **overrides))
    with pytest.raises(ModelLoadError, match=r"net\.pkl") as err:
        load_stylegan2_pkl(path)
    assert message in str(err.value)


def test_net_without_w_avg_loads_and_samples_its_mean(tmp_path, source):
    del source.mapping_net._buffers["w_avg"]  # what w_avg_beta=None gives
    mapping_kwargs = EasyDict(num_layers=2, w_avg_beta=None)
    path = write_pkl(
        tmp_path / "net.pkl", source, kwargs=official_kwargs(source, mapping_kwargs=mapping_kwargs)
    )
    G = load_stylegan2_pkl(path)
    assert G._mean_w is None and G.mean_w(n=64).shape == (16,)


def test_a_synthesis_that_is_neither_stylegan2_nor_3_is_refused(tmp_path, source):
    blocks = source.synthesis_net._modules
    blocks["stem"] = blocks.pop("b4")  # neither StyleGAN2's b4 block nor StyleGAN3's input layer
    with pytest.raises(ModelLoadError, match=r"net\.pkl: neither a StyleGAN2 nor a StyleGAN3 generator"):
        load_stylegan2_pkl(write_pkl(tmp_path / "net.pkl", source))


def test_missing_network_key_is_refused(tmp_path, source):
    with pytest.raises(ModelLoadError, match=r"net\.pkl has no 'G_avg' network"):
        load_stylegan2_pkl(write_pkl(tmp_path / "net.pkl", source), key="G_avg")


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return Path.write_text, (self.marker, "code ran")


@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated")
def test_code_hidden_in_a_tensor_storage_is_refused_without_suggesting_to_run_it(tmp_path, source):
    marker = tmp_path / "pwned"
    hidden = io.BytesIO()
    torch.save(_Payload(marker), hidden)  # the bytes official pickles hand to torch.load
    source.mapping_net._buffers["w_avg"] = Reduce(torch.storage._load_from_bytes, hidden.getvalue())
    with pytest.raises(ModelLoadError, match=r"net\.pkl.*holds Python code") as err:
        load_stylegan2_pkl(write_pkl(tmp_path / "net.pkl", source))
    assert "weights_only" not in str(err.value) and not marker.exists()


def stylegan3_repo_kwargs(G: StyleGAN2Generator, **synthesis) -> dict:
    """How NVlabs' stylegan3 repository pickles a --cfg=stylegan2 Generator: synthesis options flat."""
    kwargs = official_kwargs(G)
    del kwargs["synthesis_kwargs"]
    return kwargs | dict(channel_base=G.cfg.channel_base, channel_max=G.cfg.channel_max, num_fp16_res=4,
                         fused_modconv_default="inference_only", **synthesis)  # fmt: skip


def test_loads_a_stylegan2_pickle_from_the_stylegan3_repository(tmp_path, source):
    """Flat synthesis options; that repository's SynthesisBlock clamps at 256 unless told otherwise."""
    path = write_pkl(tmp_path / "sg3repo.pkl", source, kwargs=stylegan3_repo_kwargs(source))
    G = load_stylegan2_pkl(path)
    assert G.cfg.conv_clamp == 256 and G.cfg.channel_base == source.cfg.channel_base
    ws = torch.randn(2, G.num_ws, G.w_dim, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(G.synthesis(ws), source.synthesis(ws), atol=1e-6)
    unclamped = load_stylegan2_pkl(
        write_pkl(tmp_path / "noclamp.pkl", source, kwargs=stylegan3_repo_kwargs(source, conv_clamp=None))
    )
    assert unclamped.cfg.conv_clamp is None


def test_synthesis_options_both_nested_and_flat_are_refused(tmp_path, source):
    kwargs = official_kwargs(source) | {"channel_base": 64}
    with pytest.raises(ModelLoadError, match="both nested and flat"):
        load_stylegan2_pkl(write_pkl(tmp_path / "mixed.pkl", source, kwargs=kwargs))


GOLDEN = Path(__file__).resolve().parent / "data" / "golden"


def test_matches_the_stylegan3_repository_on_its_own_stylegan2_pickle():
    """A --cfg=stylegan2 generator pickled by NVlabs' stylegan3 code, and what that code renders
    (tests/data/golden/make_stylegan3_repo.py made both)."""
    G = load_stylegan2_pkl(GOLDEN / "sg3repo-stylegan2.pkl")
    ref = np.load(GOLDEN / "sg3repo-stylegan2.npz")
    assert G.cfg.conv_clamp == 256  # that repository's default, not stylegan2-ada's None
    z, ws = torch.from_numpy(ref["z"]), torch.from_numpy(ref["ws"])
    with torch.no_grad():
        np.testing.assert_allclose(G.broadcast(G.mapping(z)).numpy(), ref["w_mapped"], atol=1e-4)
        np.testing.assert_allclose(G.synthesis(ws).numpy(), ref["img_ws"], atol=1e-4)
        np.testing.assert_allclose(G.synthesis(G.broadcast(G.mapping(z))).numpy(), ref["img_z"], atol=1e-4)


def test_a_pickle_with_unofficial_network_code_loads_with_a_warning(tmp_path, source, caplog):
    with caplog.at_level("WARNING", logger="core.models.stylegan_pkl"):
        load_stylegan2_pkl(GOLDEN / "sg3repo-stylegan2.pkl")  # NVlabs' own source: no warning
        assert not caplog.records
        load_stylegan2_pkl(write_pkl(tmp_path / "edited.pkl", source, module_src="# edited\n" + MODULE_SRC))
    assert "edited.pkl" in caplog.text and "not NVlabs' official source" in caplog.text


def test_a_conditional_generator_matches_the_reference_for_each_class():
    G = load_stylegan2_pkl(GOLDEN / "sg3repo-stylegan2-cond.pkl")
    ref = np.load(GOLDEN / "sg3repo-stylegan2-cond.npz")
    assert G.c_dim == 3
    z = torch.from_numpy(ref["z"])
    with torch.no_grad():
        for label in range(3):
            G.set_class(label)
            w = G.mapping(z[label : label + 1])
            np.testing.assert_allclose(w.numpy(), ref["w"][label : label + 1, 0], atol=1e-4)
            img = G.synthesis(G.broadcast(w))
            np.testing.assert_allclose(img.numpy(), ref["img"][label : label + 1], atol=1e-4)
    with pytest.raises(ValueError, match="0..2"):
        G.set_class(3)


@pytest.mark.parametrize("cfg", ["t", "r"])
def test_stylegan3_pickles_match_nvlabs_code(cfg, caplog):
    """Golden renders of NVlabs' StyleGAN3 (stylegan3-t: separable Kaiser filters; -r: radial filters,
    1x1 convs), made by tests/data/golden/make_stylegan3_sg3.py with their code at 583f2bd."""
    from core.gan.stylegan3 import StyleGAN3Generator

    with caplog.at_level("WARNING"):
        G = load_stylegan2_pkl(GOLDEN / f"sg3-{cfg}.pkl")
    assert not [r for r in caplog.records if "official" in r.getMessage()]  # NVlabs' own source
    assert isinstance(G, StyleGAN3Generator) and (G.resolution, G.num_ws, G.w_dim) == (32, 8, 16)
    ref = np.load(GOLDEN / f"sg3-{cfg}.npz")
    with torch.no_grad():
        np.testing.assert_allclose(
            G.mapping(torch.from_numpy(ref["z"])).numpy(), ref["w_mapped"][:, 0], atol=1e-5
        )
        img = G.synthesis(torch.from_numpy(ref["ws"]))
        np.testing.assert_allclose(
            img.numpy(), ref["img_ws"], atol=1e-4 * max(1.0, np.abs(ref["img_ws"]).max())
        )
        w = G.mapping(torch.from_numpy(ref["z"]))
        truncated = G.mean_w() + 0.7 * (w - G.mean_w())  # psi 0.7 towards the pickle's w_avg
        np.testing.assert_allclose(G.synthesis(G.broadcast(truncated)).numpy(), ref["img_z_psi07"], atol=1e-4)


def test_our_stylegan3_filters_equal_the_ones_nvlabs_designs():
    from core.gan.stylegan3 import StyleGAN3Generator

    for cfg in ("t", "r"):
        loaded = load_stylegan2_pkl(GOLDEN / f"sg3-{cfg}.pkl")
        pytest.importorskip("scipy") if cfg == "r" else None  # the radial (jinc) filter needs scipy.special
        fresh = StyleGAN3Generator(loaded.cfg)  # designs its own low-pass filters
        for name in loaded.synthesis_net.layer_names:
            a, b = getattr(loaded.synthesis_net, name), getattr(fresh.synthesis_net, name)
            for f in ("up_filter", "down_filter"):
                if getattr(a, f) is not None:
                    torch.testing.assert_close(getattr(b, f), getattr(a, f), atol=1e-7, rtol=0)


def test_stylegan3_inverts_and_round_trips_through_safetensors(tmp_path):
    from core.jobs.invert import invert
    from core.jobs.params import InvertParams
    from core.jobs.runner import run_to_completion
    from core.models.io import load_generator, save_generator

    G = load_stylegan2_pkl(GOLDEN / "sg3-t.pkl")
    again = load_generator(save_generator(G, tmp_path / "sg3.safetensors"))
    ws = torch.randn(2, G.num_ws, G.w_dim)
    with torch.no_grad():
        assert torch.equal(again.synthesis(ws), G.synthesis(ws))
    target = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    r = run_to_completion(invert(InvertParams(target=target, steps=15, perceptual_weight=0), G))
    assert r.loss_history[-1]["l1"] < r.loss_history[0]["l1"] and r.images.shape == (1, 32, 32, 3)


def test_numpy_arrays_in_a_pickle_are_read_as_plain_data_only(tmp_path, source):
    path = write_pkl(
        tmp_path / "arrays.pkl", source, evil=np.zeros(3)
    )  # numpy arrays pickle via _reconstruct
    assert load_stylegan2_pkl(path).resolution == 16  # a plain array anywhere is harmless data
    for bad in (np.array([object()], dtype=object), np.zeros(2).view(np.recarray)):
        path = write_pkl(tmp_path / "bad.pkl", source, evil=bad)
        with pytest.raises(ModelLoadError):
            load_stylegan2_pkl(path)
