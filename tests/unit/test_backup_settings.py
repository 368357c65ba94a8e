"""The backup section of the ingest settings."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from kubemate_ingest.settings import IngestSettings

STRONG = {"jwt_secret": "j" * 40, "internal_secret": "i" * 40}


def test_production_refuses_the_development_key_for_an_s3_backup_target() -> None:
    s3 = {"provider": "s3", "bucket": "kubemate-backups"}
    with pytest.raises(ValidationError, match=r"backup\.target\.secret_key"):
        IngestSettings(mode="production", auth=STRONG, backup={"target": s3})  # type: ignore[arg-type]
    settings = IngestSettings(
        mode="production",
        auth=STRONG,  # type: ignore[arg-type]
        backup={"target": {**s3, "secret_key": "a-real-secret"}},  # type: ignore[arg-type]
    )
    assert settings.backup.target.bucket == "kubemate-backups"
    # A directory target has no key to refuse; development takes the default.
    assert IngestSettings(mode="production", auth=STRONG).backup.target.provider == "filesystem"  # type: ignore[arg-type]
    assert IngestSettings(backup={"target": s3}).backup.keep_last == 7  # type: ignore[arg-type]
