"""Cost of verifying one NTAG 424 DNA SUN message in process (no HTTP, no database):
what the NFC verification step adds to a tap on ``/n/{code}``.

    python benchmarks/sun_verify.py [--messages 20000]

Prints verifications per second and microseconds per verification, for valid messages
and for forged ones (the same steps run: the MAC is always computed).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from campaigns.payloads.keys import SunKeys
from campaigns.payloads.sun import verify_sun
from tests.fixtures.ntag424 import Ntag424


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    args = parser.parse_args()
    tag = Ntag424.random()
    keys = SunKeys(meta_read=tag.meta_read_key, file_read=tag.file_read_key)
    valid = [tag.tap() for _ in range(min(args.messages, 2_000))]
    forged = [(e, os.urandom(8).hex()) for e, _ in valid]
    for name, messages in (("valid", valid), ("forged", forged)):
        start = time.perf_counter()
        done = 0
        while done < args.messages:
            for e, c in messages:
                verify_sun(e, c, uid=tag.uid, keys=keys)
            done += len(messages)
        elapsed = time.perf_counter() - start
        print(
            f"{name:>6}: {done / elapsed:,.0f} verifications/s, "
            f"{elapsed / done * 1e6:.1f} µs each ({done} messages)"
        )


if __name__ == "__main__":
    main()
