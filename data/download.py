"""Public evaluation sets by name: download, verify SHA-256, resume a partial download.

`gicl data kodak DIR` fetches the 24 Kodak images (768×512 PNG, the test set every paper of
this field reports) from their long-standing public location and checks each file against
the SHA-256 sum carried here, so an evaluation is on exactly the published pixels.

Why hand-written (stdlib `urllib`, no download library): the whole job is a few HTTP GETs
with a `Range` header to resume; what matters is the outcome on bad transfers, each one line
(`UserError`, exit 2) and nothing written outside DIR:
- a file whose bytes do not match its sum is deleted and reported with both sums;
- a transfer that stops early keeps `NAME.part` in DIR, and the same command resumes it with
  `Range: bytes=N-` (a server that ignores `Range` restarts the file from zero);
- files already present with the right sum are not downloaded again.

CLIC 2020 professional validation is not offered: its public location is not stable.
"""

from __future__ import annotations

import hashlib
import http.client
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from gicl.errors import UserError

CHUNK = 1 << 16
TIMEOUT_S = 60


@dataclass(frozen=True)
class PublicSet:
    """A named set of files under one base URL, each with its published SHA-256."""

    base_url: str
    sha256: dict[str, str]


KODAK = PublicSet(
    base_url="http://r0k.us/graphics/kodak/kodak/",
    sha256={
        "kodim01.png": "a56e27cbf5f843c048b6af1d6e090760e9c92fadba88b7dee0205918a37523bd",
        "kodim02.png": "133d50ad0f2cda48fef30e251f433fa1a98ee08c0f2d07cdab9462e876ccae5d",
        "kodim03.png": "e25ca1ff2f0c0cb5fdfd5f9b0a0bb21ac4c3de3c84a67f35b09a85d3306249db",
        "kodim04.png": "1e079e4adc03524e53f1394a2a8e1c5995f0f70a5aec125b12fa3fdbe33cba37",
        "kodim05.png": "10349e963c5c813d327852f82c1795fa4148d69fedffc4c589bee458e3ac3d53",
        "kodim06.png": "363510303b715d4cbc384e1ce227e466b613a09e1b71ae985882bf8e7fbd9b18",
        "kodim07.png": "a74d606cef80e70a04fb983364f79fb954ad46665edf2a8b7355ce81adfa7998",
        "kodim08.png": "e3cfc1371a5643c7f8cdf1bd565c172abce6aa26e3f2fdce74cbf7c32364089d",
        "kodim09.png": "a0c72eb70826619305388ed9c0f8aa8f491b234155d62673cda270d7021149a2",
        "kodim10.png": "28fb615837dc8e66fc92c40158cac80b57f07d0ce77d22576aa85ac9e2787336",
        "kodim11.png": "7936814b58b5387fce2e4e2488b4ec830dadd95fa9520f358ddb30990b50f2b6",
        "kodim12.png": "d78c37c2f04f23761ed2367dd77e2db584ddd4c3950833fecf89f199a8126980",
        "kodim13.png": "bc34a3ce58dea09dce1704c997171602de90cb34d0c8503a988b77f473d39b08",
        "kodim14.png": "55a94550ff18f3246c4074fd32b77b0c74447c26b6ad274d564d999c0450ba6e",
        "kodim15.png": "d36d884e29bce92adea11de456be4e9a5815e79c112d47453a34a6f6edc84e63",
        "kodim16.png": "a89c7268ccd4718ba424a99fc4643c572cf692ca6eae887185ceb4e9f11d2e54",
        "kodim17.png": "37afcc89fbdcb76d9518e04b2fc011027e2f4cd14b3b2f83cefd721641a47c5b",
        "kodim18.png": "5deb2d91e347cbdcc0d8a595daa8877de0772c9cdbce4956a2f45a0f97648a47",
        "kodim19.png": "8f12d577f9ca36f384f82dec11ed8a4e12a27bd5a32ef117b9bcaf4fe4d0606f",
        "kodim20.png": "3b46c71e3b92a563820ba32936be8330c586c41f938efd94be938386aae4328a",
        "kodim21.png": "ac958597c82073f6bb65129c68f72b651db5b9efd82e11547d07350214bc268b",
        "kodim22.png": "37782d92a1cfb36ff586047d5c0a2fa75e042fd0b58f90f866b4ab91349c4e03",
        "kodim23.png": "2ed596d7de74cc43d23add4c116763f49d7b5a78b21444fe84caece531ee933b",
        "kodim24.png": "ac96f39dacff2ec303ddb8a7eb72d59f77af2b491144926335938338ee63473d",
    },
)

PUBLIC_SETS: dict[str, PublicSet] = {"kodak": KODAK}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _transfer(url: str, part: Path) -> None:
    """Append the rest of `url` to `part` (resuming from its size); raise when it stops early."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left to send: the part file is already whole
            return
        raise UserError(f"{url}: HTTP {e.code} {e.reason}; check the address (--url) and retry") from None
    except (urllib.error.URLError, OSError) as e:
        raise UserError(f"{url}: {getattr(e, 'reason', e)}; check the network or --url and retry") from None
    with response:
        resumed = response.status == 206
        expected = response.headers.get("Content-Length")
        received = 0
        with part.open("ab" if resumed else "wb") as out:
            try:
                for block in iter(lambda: response.read(CHUNK), b""):
                    out.write(block)
                    received += len(block)
            except (OSError, http.client.HTTPException):
                pass  # reported below as an early stop, with the bytes kept for resuming
    if expected is not None and received < int(expected):
        total = (have if resumed else 0) + int(expected)
        got = (have if resumed else 0) + received
        raise UserError(f"download of {part.name[:-5]} stopped at {got} of {total} bytes; "
                        f"run the same command again to resume ({part} is kept)")


def fetch(name: str, dest: Path, base_url: str | None = None) -> list[Path]:
    """Download the public set `name` into `dest`; returns the verified files in order."""
    if name not in PUBLIC_SETS:
        raise UserError(f"unknown data set '{name}' (known: {', '.join(sorted(PUBLIC_SETS))})")
    public = PUBLIC_SETS[name]
    base = (base_url or public.base_url).rstrip("/") + "/"
    dest.mkdir(parents=True, exist_ok=True)
    files = []
    for file, expected in public.sha256.items():
        target = dest / file
        if target.is_file() and sha256_of(target) == expected:
            files.append(target)
            continue
        part = dest / f"{file}.part"
        _transfer(base + file, part)
        actual = sha256_of(part)
        if actual != expected:
            part.unlink()
            raise UserError(f"{file}: SHA-256 {actual} differs from the published {expected}; "
                            "the server sent another file (deleted): retry, or check --url")
        part.replace(target)
        files.append(target)
    return files
