"""Precision that fits the hardware: `auto` is bfloat16 where bf16 is native (CUDA, CPUs with AVX-512 BF16 / AMX),
float32 elsewhere; an explicit bfloat16 on an emulating CPU works but warns; the configs default to auto."""

import logging

import pytest
import torch

import jepa.runtime.precision as precision
from jepa.config import ConfigError
from jepa.config.evals import EvalOptimConfig
from jepa.config.pretrain import MetaConfig
from jepa.runtime.precision import cpu_bf16_support, resolve_dtype


@pytest.fixture
def cpu(monkeypatch):
    """Set what the CPU reports: `cpu(flags)` with JEPA_CPU_BF16 unset."""

    def set_flags(flags: set[str], machine: str = "x86_64") -> None:
        monkeypatch.delenv("JEPA_CPU_BF16", raising=False)
        for key in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
            monkeypatch.delenv(key, raising=False)
        monkeypatch.setattr(precision, "cpu_flags", lambda: set(flags))
        monkeypatch.setattr(precision.platform, "machine", lambda: machine)
        cpu_bf16_support.cache_clear()

    yield set_flags
    cpu_bf16_support.cache_clear()


@pytest.mark.parametrize(
    ("flags", "machine", "native"),
    [
        ({"avx2", "fma"}, "x86_64", False),
        ({"avx2", "avx512f"}, "x86_64", False),  # AVX-512 alone does not compute bf16
        ({"avx512f", "avx512_bf16"}, "x86_64", True),
        ({"avx512f", "amx_bf16", "amx_tile"}, "x86_64", True),
        ({"asimd", "bf16"}, "aarch64", True),
        ({"asimd"}, "aarch64", False),
    ],
)
def test_auto_is_bfloat16_only_where_the_cpu_computes_it(cpu, flags, machine, native, caplog):
    cpu(flags, machine)
    with caplog.at_level(logging.INFO, logger="jepa.runtime.precision"):
        dtype = resolve_dtype("auto", "cpu")
    assert dtype == (torch.bfloat16 if native else torch.float32)
    assert "auto -> " in caplog.text and "CPU (" in caplog.text  # the choice is logged with its reason


def test_a_bf16_cpu_with_onednn_held_below_bf16_emulates_it(cpu, monkeypatch):
    """A oneDNN ISA limit below AVX-512 BF16 makes a bf16 CPU compute bf16 matrix products as an AVX2-only CPU does
    (about 1 GFLOP/s measured here): auto must then be float32."""
    cpu({"avx512f", "avx512_bf16", "amx_bf16"})
    monkeypatch.setenv("DNNL_MAX_CPU_ISA", "AVX512_CORE")
    assert cpu_bf16_support() == (False, "CPU has avx512_bf16 and amx_bf16 but DNNL_MAX_CPU_ISA=AVX512_CORE: bf16 is "
                                         "emulated")  # fmt: skip
    assert resolve_dtype("auto", "cpu") == torch.float32
    cpu({"avx512f", "avx512_bf16"})
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")
    assert cpu_bf16_support() == (False, "CPU has avx512_bf16 but ONEDNN_MAX_CPU_ISA=avx2: bf16 is emulated")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")  # a limit above bf16 keeps it native
    cpu_bf16_support.cache_clear()
    assert cpu_bf16_support()[0] is True


def test_explicit_bfloat16_on_an_emulating_cpu_warns_and_is_honoured(cpu, caplog):
    cpu({"avx2"})
    with caplog.at_level(logging.WARNING, logger="jepa.runtime.precision"):
        assert resolve_dtype("bfloat16", "cpu") == torch.bfloat16
    assert "50x slower" in caplog.text
    caplog.clear()
    cpu({"amx_bf16"})
    with caplog.at_level(logging.WARNING, logger="jepa.runtime.precision"):
        assert resolve_dtype("bfloat16", "cpu") == torch.bfloat16
    assert not caplog.text


def test_explicit_dtypes_and_the_override(monkeypatch):
    assert resolve_dtype("float32", "cpu") == torch.float32
    assert resolve_dtype("float16", "cpu") == torch.float16
    with pytest.raises(ValueError, match="meta.dtype"):
        resolve_dtype("fp32", "cpu")
    for value, expected in (("1", torch.bfloat16), ("0", torch.float32)):
        monkeypatch.setenv("JEPA_CPU_BF16", value)
        cpu_bf16_support.cache_clear()
        assert resolve_dtype("auto", "cpu") == expected
    cpu_bf16_support.cache_clear()


def test_configs_default_to_auto_and_refuse_other_words():
    assert MetaConfig().dtype == "auto"
    assert EvalOptimConfig().use_bfloat16 == "auto"
    from jepa.config.strict import from_dict

    for good in ("auto", True, False):
        assert from_dict(EvalOptimConfig, {"use_bfloat16": good}).use_bfloat16 == good
    with pytest.raises(ConfigError):
        from_dict(MetaConfig, {"dtype": "fp16"})
    with pytest.raises(ConfigError):
        from_dict(EvalOptimConfig, {"use_bfloat16": "yes"})


def test_the_pretrainer_autocasts_to_what_auto_resolved(tmp_path, monkeypatch):
    from test_engine import tiny_config

    from app.pretrain import Pretrainer

    monkeypatch.setenv("JEPA_CPU_BF16", "1")
    cpu_bf16_support.cache_clear()
    try:
        trainer = Pretrainer(tiny_config(tmp_path / "run"))
    finally:
        cpu_bf16_support.cache_clear()
    assert trainer.dtype == torch.bfloat16 and trainer.autocast
    monkeypatch.setenv("JEPA_CPU_BF16", "0")
    assert Pretrainer(tiny_config(tmp_path / "run2")).dtype == torch.float32
    cpu_bf16_support.cache_clear()
