"""Settings of the model manager: the shared sections for now."""

from __future__ import annotations

from kubemate.settings import KubemateSettings


class ModelManagerSettings(KubemateSettings):
    pass
