"""Per-step work stays on the device: GLC's quality rows come from the batch size alone, equal
to the rows the device tensor holds (what the former `unique().tolist()` read back)."""

from __future__ import annotations

import torch

from gicl.training.glc import quality_rows


def test_quality_rows_are_the_rows_present_without_a_device_read_back() -> None:
    for batch in range(1, 8):
        for qualities in range(1, 5):
            x = torch.zeros(batch, 3, 2, 2)
            rows = torch.arange(batch) % qualities
            got = quality_rows(x, qualities)
            assert [q for q, _ in got] == rows.unique().tolist()
            for q, mask in got:
                assert torch.equal(mask, rows == q)
            assert sum(int(m.sum()) for _, m in got) == batch  # every image in one row
