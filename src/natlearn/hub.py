""":class:`Backbone`: a natlearn backbone as a ``huggingface_hub`` model (``from_pretrained`` from a
folder or a Hub repository, ``save_pretrained``, ``push_to_hub``), in the layout
``natlearn export RUN --format hf`` writes (:func:`natlearn.export.write_hub_folder`). Needs
``huggingface_hub`` (``pip install 'natlearn[hub]'``); :func:`natlearn.load_backbone` reads such a
folder without it."""

from __future__ import annotations

from natlearn.errors import NatlearnError
from natlearn.export import backbone_network
from natlearn.models import Network

try:
    from huggingface_hub import PyTorchModelHubMixin
except ImportError as error:
    raise NatlearnError(
        "natlearn.Backbone needs huggingface_hub: pip install 'natlearn[hub]' "
        "(natlearn.load_backbone(FOLDER) reads an exported folder without it)"
    ) from error

__all__ = ["Backbone"]


class Backbone(
    Network,
    PyTorchModelHubMixin,
    library_name="natlearn",
    tags=["noise-as-targets", "self-supervised", "image-feature-extraction"],
):
    """A natlearn backbone (input layer, trunk, neck; no NAT head) in the Hugging Face Hub's
    layout::

        backbone = natlearn.Backbone.from_pretrained("runs/mine-hf")  # or "user/repo"
        features = backbone(images)  # (b, C, S, S) in [0, 1] -> (b, F) pooled features
        backbone.push_to_hub("user/repo")  # after `hf auth login`

    ``run_config`` holds the run config's network fields and ``network`` the network spec
    (channels, image size, normalisation); ``config.json``'s other keys describe the backbone to
    readers who do not import natlearn and are kept as they are when it is saved again.
    (``huggingface_hub`` reads an argument named ``config`` as the whole file, hence
    ``run_config``.)
    """

    def __init__(self, run_config: dict, network: dict, **description: object):
        built = backbone_network(run_config, network)
        super().__init__(built.input, built.convs, built.neck, built.head, built.arch)
        self.eval()
