"""Settings of the model manager: the shared sections plus ``models`` and ``kubernetes``."""

from __future__ import annotations

from pathlib import Path

from kubemate.models_config import ModelsConfig, OllamaInstanceConfig
from kubemate.settings import KubemateSettings
from kubemate_model_manager.k8s.config import KubernetesConfig


class ModelManagerSettings(KubemateSettings):
    models: ModelsConfig = ModelsConfig()
    kubernetes: KubernetesConfig = KubernetesConfig()

    def local_models_dir(self) -> Path:
        return self.models.local.directory or self.data_dir / "models"

    def ollama_instances(self) -> dict[str, OllamaInstanceConfig]:
        """The registered Ollama instances; with none registered, the LLM's own Ollama server
        (when the LLM is served by Ollama) is the instance ``default``."""
        if self.models.ollama:
            return dict(self.models.ollama)
        if self.llm.provider == "ollama" and self.llm.base_url:
            return {"default": OllamaInstanceConfig(base_url=self.llm.base_url)}
        return {}
