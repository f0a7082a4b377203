"""torch.hub entry points: the official I-JEPA, V-JEPA and V-JEPA 2 encoders, frozen and in eval mode.

    encoder = torch.hub.load("<owner>/<repo>", "vjepa_vitl16")                      # downloads the weights
    encoder = torch.hub.load(repo_dir, "ijepa_vith14_in1k", source="local", pretrained=False)
    encoder, predictor = torch.hub.load(repo_dir, "vjepa2_vitl", source="local", checkpoint="vitl.pt",
                                        with_predictor=True)

Every entry point takes ``pretrained`` (download the released weights), ``checkpoint`` (a local file instead),
``which`` (``"target_encoder"`` or ``"encoder"``), ``with_predictor`` and architecture overrides; see
:func:`jepa.hub.load`. The architectures and URLs are the table :data:`jepa.hub.RELEASES`.
"""

from jepa.hub import entry_point as _entry_point

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
