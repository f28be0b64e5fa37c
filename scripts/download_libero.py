#!/usr/bin/env python
"""Download a LIBERO LeRobot v2.1 dataset from the Hugging Face Hub and verify it.

    python scripts/download_libero.py \
        --repo-id Aiming1998/libero_10_no_noops_lerobotv2.1 \
        --out /path/to/data/LIBERO_lerobot/libero_10_no_noops_lerobotv2.1

Uses `huggingface_hub.snapshot_download` (repo_type="dataset"); re-running resumes and
skips files already complete. Then reads every episode with `vla.data.LeRobotReader`
(parquet columns, and each video's first and last frame). Failures print one line and
exit non-zero: 2 = download failed, 3 = the downloaded data is not a readable dataset.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from vla.errors import EXPECTED_ERRORS, VLAError, cli_error  # noqa: E402

EXIT_DOWNLOAD, EXIT_VERIFY = 2, 3


class DownloadError(VLAError, RuntimeError):
    """The Hub download failed; the message says why in one line."""


def download(repo_id: str, out: Path, revision: str | None = None, max_workers: int = 8) -> Path:
    """Fetch the dataset snapshot into `out`; a DownloadError with one line says why it failed."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (GatedRepoError, HFValidationError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    try:
        snapshot_download(repo_id, repo_type="dataset", revision=revision, local_dir=str(out),
                          max_workers=max_workers)
    except GatedRepoError:
        raise DownloadError(f"dataset {repo_id!r} is gated: accept its terms on huggingface.co and log in "
                           f"(`hf auth login`)") from None
    except RepositoryNotFoundError:
        raise DownloadError(f"dataset {repo_id!r} not found on the Hugging Face Hub (check --repo-id; "
                           f"private datasets need `hf auth login`)") from None
    except RevisionNotFoundError:
        raise DownloadError(f"dataset {repo_id!r} has no revision {revision!r}") from None
    except HFValidationError as exc:
        raise DownloadError(f"invalid --repo-id {repo_id!r}: {str(exc).splitlines()[0]}") from None
    except LocalEntryNotFoundError:
        raise DownloadError(f"cannot reach the Hugging Face Hub to download {repo_id!r} (offline, or "
                           f"HF_HUB_OFFLINE is set); connect and re-run, finished files are kept") from None
    except HfHubHTTPError as exc:
        raise DownloadError(f"downloading {repo_id!r} failed: {str(exc).splitlines()[0]}") from None
    except OSError as exc:
        raise DownloadError(f"downloading {repo_id!r} into {out} failed: {exc}") from None
    return out


def verify(out: Path, decode: bool = True) -> str:
    """Read every episode; returns a one-line summary or raises DatasetError."""
    from vla.data import LeRobotReader

    reader = LeRobotReader(out)
    reader.validate(decode=decode)
    return (f"{out}: LeRobot {reader.meta.version}, {reader.num_episodes} episodes, {len(reader)} frames, "
            f"{len(reader.meta.tasks)} tasks, cameras {reader.video_keys}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo-id", required=True, help="e.g. Aiming1998/libero_10_no_noops_lerobotv2.1")
    parser.add_argument("--out", required=True, type=Path, help="directory to download into")
    parser.add_argument("--revision", default=None, help="branch, tag or commit (default: main)")
    parser.add_argument("--max-workers", type=int, default=8)
    parser.add_argument("--verify", choices=("decode", "files", "none"), default="decode",
                        help="decode: also decode each video's first/last frame; files: parquet + file presence")
    args = parser.parse_args(argv)

    try:
        download(args.repo_id, args.out, args.revision, args.max_workers)
    except EXPECTED_ERRORS as exc:   # DownloadError, or the output directory cannot be written
        print(cli_error("download_libero", exc), file=sys.stderr)
        return EXIT_DOWNLOAD
    if args.verify == "none":
        print(f"downloaded {args.repo_id} to {args.out} (not verified)")
        return 0
    try:
        print(verify(args.out, decode=args.verify == "decode"))
    except EXPECTED_ERRORS as exc:
        print(cli_error(f"download_libero: {args.out} is not a readable LeRobot v2.1 dataset", exc), file=sys.stderr)
        return EXIT_VERIFY
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
