"""One `doryo dev` per data directory: a second one is refused before it starts anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot import dev
from bot.core.errors import DoryoError


async def test_a_second_dev_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    first = dev._hold(tmp_path)
    try:
        with pytest.raises(DoryoError, match="another `doryo dev` is running"):
            await dev.run_dev(tmp_path)
        assert not (tmp_path / "config.yaml").exists()  # nothing of the first's was touched
    finally:
        first.close()
    dev._hold(tmp_path).close()  # free again once the first is gone
