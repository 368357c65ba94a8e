"""``/api/ps`` as Ollama documents it, read into running models with memory use and expiry.

The Ollama server is a STAND-IN (an ``httpx.MockTransport`` answering Ollama's documented
response, no network): real Ollama writes Go times with nanoseconds and the server's UTC offset,
which Python's ``fromisoformat`` does not read as they come.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import httpx

from kubemate.models_config import OllamaInstanceConfig
from kubemate_model_manager.runtimes.ollama import OllamaModels

# The example of Ollama's API reference (docs/api.md, "List Running Models"), plus a GPU model.
PS = {
    "models": [
        {
            "name": "mistral:latest",
            "model": "mistral:latest",
            "size": 5137025024,
            "digest": "2ae6f6dd7a3dd734790bbbf58b8909a606e0e7e97e94b7604e0aa7ae4490e6d8",
            "details": {"format": "gguf", "family": "llama", "quantization_level": "Q4_0"},
            "expires_at": "2024-06-04T14:38:31.83753-07:00",
            "size_vram": 5137025024,
        },
        {
            "name": "qwen2.5:0.5b",
            "model": "qwen2.5:0.5b",
            "size": 1_200_000_000,
            "expires_at": "2026-11-26T03:00:00.123456789Z",
            "size_vram": 0,
        },
    ]
}


async def test_running_models_carry_memory_and_expiry() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/ps"
        return httpx.Response(200, json=PS)

    client = httpx.AsyncClient(base_url="http://ollama", transport=httpx.MockTransport(answer))
    runtime = OllamaModels("gpu", OllamaInstanceConfig(base_url="http://ollama"), client=client)
    try:
        gpu, cpu = await runtime.running()
    finally:
        await client.aclose()
    assert (gpu.name, gpu.runtime, gpu.size, gpu.size_vram) == (
        "mistral:latest",
        "ollama:gpu",
        5137025024,
        5137025024,
    )
    assert gpu.expires_at == datetime(
        2024, 6, 4, 14, 38, 31, 837530, tzinfo=timezone(timedelta(hours=-7))
    )
    assert (cpu.size, cpu.size_vram) == (1_200_000_000, 0)
    assert cpu.expires_at == datetime(2026, 11, 26, 3, 0, 0, 123456, tzinfo=UTC)
