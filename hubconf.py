"""torch.hub entry points: the official I-JEPA, V-JEPA and V-JEPA 2 encoders, frozen and in eval mode, and the
official V-JEPA 2 / 2.1 hub names.

    encoder = torch.hub.load("<owner>/<repo>", "vjepa_vitl16")                      # downloads the weights
    encoder = torch.hub.load(repo_dir, "ijepa_vith14_in1k", source="local", pretrained=False)
    encoder, predictor = torch.hub.load(repo_dir, "vjepa2_vitl", source="local", checkpoint="vitl.pt",
                                        with_predictor=True)

Every entry point takes ``pretrained`` (download the released weights), ``checkpoint`` (a local file instead),
``which`` (``"target_encoder"`` or ``"encoder"``), ``with_predictor`` and architecture overrides; see
:func:`jepa.hub.load`. The architectures and URLs are the table :data:`jepa.hub.RELEASES`.

The official V-JEPA 2 names are drop-ins for ``torch.hub.load("facebookresearch/vjepa2", ...)``: the same keywords
(``pretrained=``, architecture keywords) and return values, ``(encoder, predictor)`` as built (trainable), and the
official evaluation transform::

    encoder, predictor = torch.hub.load(repo_dir, "vjepa2_vit_large", source="local")
    processor = torch.hub.load(repo_dir, "vjepa2_preprocessor", source="local")
    clip = processor(frames)[0]     # uint8 [T, H, W, 3] -> [3, T, 256, 256]
"""

from jepa.hub import entry_point as _entry_point
from jepa.hub import official_entry_point as _official_entry_point
from jepa.hub import vjepa2_preprocessor  # noqa: F401 (an entry point)

dependencies = ["torch", "torchvision", "timm", "numpy"]

ijepa_vith14_in1k = _entry_point("ijepa_vith14_in1k")
ijepa_vith14_in22k = _entry_point("ijepa_vith14_in22k")
ijepa_vith16_448_in1k = _entry_point("ijepa_vith16_448_in1k")
ijepa_vitg16_in22k = _entry_point("ijepa_vitg16_in22k")
vjepa_vitl16 = _entry_point("vjepa_vitl16")
vjepa_vith16 = _entry_point("vjepa_vith16")
vjepa_vith16_384 = _entry_point("vjepa_vith16_384")
vjepa2_vitl = _entry_point("vjepa2_vitl")
vjepa2_vith = _entry_point("vjepa2_vith")
vjepa2_vitg = _entry_point("vjepa2_vitg")
vjepa2_vitg_384 = _entry_point("vjepa2_vitg_384")

# The official V-JEPA 2 hub's names.
vjepa2_vit_large = _official_entry_point("vjepa2_vit_large")
vjepa2_vit_huge = _official_entry_point("vjepa2_vit_huge")
vjepa2_vit_giant = _official_entry_point("vjepa2_vit_giant")
vjepa2_vit_giant_384 = _official_entry_point("vjepa2_vit_giant_384")

# V-JEPA 2.1 under its official names: (encoder, predictor), trainable, as the official hub returns them.
vjepa2_1_vit_base_384 = _official_entry_point("vjepa2_1_vit_base_384")
vjepa2_1_vit_large_384 = _official_entry_point("vjepa2_1_vit_large_384")
vjepa2_1_vit_giant_384 = _official_entry_point("vjepa2_1_vit_giant_384")
vjepa2_1_vit_gigantic_384 = _official_entry_point("vjepa2_1_vit_gigantic_384")


def vjepa2_ac_vit_giant(*, pretrained: bool = True, **kwargs):  # type: ignore[no-untyped-def]
    """V-JEPA 2-AC: the ViT-g encoder (256 px, RoPE) and its action-conditioned predictor, ``(encoder, predictor)``
    as the official hub returns them (``checkpoint=`` a local file instead of the download)."""
    from jepa.worldmodel.load import vjepa2_ac_vit_giant as make

    return make(pretrained=pretrained, **kwargs)
