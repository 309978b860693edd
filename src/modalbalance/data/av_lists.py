"""Split lists and media naming of CREMA-D, AVE and Kinetics-Sounds.

``prepare`` and the data sets share these readers, so that both agree on the
clip ids that name the prepared files. Each reader returns ``ListEntry`` items
in file order and raises DataError naming the file and line for a malformed line.

- CREMA-D: ``train.csv`` and ``test.csv`` with lines ``clip_id,EMOTION`` such as
  ``1001_DFA_ANG_XX,ANG``; media ``AudioWAV/<clip_id>.wav`` and
  ``VideoFlash/<clip_id>.flv``. The actor is the first field of the clip id.
- AVE: ``trainSet.txt``, ``valSet.txt`` and ``testSet.txt`` with lines
  ``Category&video_id&quality&start_s&end_s``; media ``AVE/<video_id>.mp4``.
  Only the annotated event segment is used, and the clip id is
  ``<video_id>_<start_s>_<end_s>``. A video may be listed twice with two
  categories for one segment; both lines are kept and share the prepared clip.
- Kinetics-Sounds: ``my_train.txt`` and ``my_test.txt`` with lines
  ``clip_id,<number>,class_index`` where the clip id is ``<youtube_id>_<start>_<end>``
  or ``<youtube_id>_<start>``; media ``videos/<clip_id>.mp4``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from modalbalance.errors import DataError

CREMAD_EMOTIONS = ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")  # label order of the lists' stat.csv

# Label order: the order in which the categories first appear in the AVE lists.
AVE_CATEGORIES = (
    "Church bell",
    "Male speech, man speaking",
    "Bark",
    "Fixed-wing aircraft, airplane",
    "Race car, auto racing",
    "Female speech, woman speaking",
    "Helicopter",
    "Violin, fiddle",
    "Flute",
    "Ukulele",
    "Frying (food)",
    "Truck",
    "Shofar",
    "Motorcycle",
    "Acoustic guitar",
    "Train horn",
    "Clock",
    "Banjo",
    "Goat",
    "Baby cry, infant cry",
    "Bus",
    "Chainsaw",
    "Cat",
    "Horse",
    "Toilet flush",
    "Rodents, rats, mice",
    "Accordion",
    "Mandolin",
)

KINETICS_SOUNDS_NUM_CLASSES = 31
# The lists give class indices only, so the class names are the indices as text.
KINETICS_SOUNDS_CLASSES = tuple(str(index) for index in range(KINETICS_SOUNDS_NUM_CLASSES))
YOUTUBE_ID_LENGTH = 11

LIST_FILES = {
    "cremad": {"train": "train.csv", "test": "test.csv"},
    "ave": {"train": "trainSet.txt", "val": "valSet.txt", "test": "testSet.txt"},
    "kinetics-sounds": {"train": "my_train.txt", "test": "my_test.txt"},
}


@dataclass(frozen=True)
class ListEntry:
    """One line of a split list.

    Attributes:
        clip_id: name of the prepared files (``audio/<clip_id>.npy``, ``frames/<clip_id>/``).
        label: class index.
        video: stem of the raw media file.
        start_s, end_s: the annotated segment in seconds, or None for the whole clip.
    """

    clip_id: str
    label: int
    video: str
    start_s: float | None = None
    end_s: float | None = None


def list_path(splits_dir: str | Path, dataset: str, split: str) -> Path:
    """Return the path of ``dataset``'s list file for ``split``, or raise DataError when it is missing."""
    path = Path(splits_dir) / LIST_FILES[dataset][split]
    if not path.is_file():
        raise DataError(f"{dataset} {split} list not found: {path}; point the splits directory at the folder containing {path.name}")
    return path


def read_list(dataset: str, path: str | Path) -> list[ListEntry]:
    """Read one split list of ``dataset`` (``cremad``, ``ave`` or ``kinetics-sounds``)."""
    readers = {"cremad": read_cremad_list, "ave": read_ave_list, "kinetics-sounds": read_kinetics_sounds_list}
    return readers[dataset](Path(path))


def _lines(path: Path) -> list[tuple[int, str]]:
    # utf-8-sig drops the byte-order mark that some of the published lists start with.
    with open(path, encoding="utf-8-sig") as handle:
        return [(number, line.strip()) for number, line in enumerate(handle, start=1) if line.strip()]


def read_cremad_list(path: Path) -> list[ListEntry]:
    entries = []
    with open(path, encoding="utf-8-sig", newline="") as handle:
        for number, row in enumerate(csv.reader(handle), start=1):
            if not row:
                continue
            if len(row) != 2 or row[1].strip() not in CREMAD_EMOTIONS:
                raise DataError(
                    f"{path}:{number}: expected 'clip_id,EMOTION' with EMOTION one of {', '.join(CREMAD_EMOTIONS)}; got {','.join(row)!r}"
                )
            clip_id = row[0].strip()
            entries.append(ListEntry(clip_id=clip_id, label=CREMAD_EMOTIONS.index(row[1].strip()), video=clip_id))
    return entries


def cremad_actor(clip_id: str) -> str:
    """Return the actor id of a CREMA-D clip id (``1001`` for ``1001_DFA_ANG_XX``)."""
    return clip_id.split("_", 1)[0]


def read_ave_list(path: Path) -> list[ListEntry]:
    entries = []
    for number, line in _lines(path):
        fields = line.split("&")
        if len(fields) != 5:
            raise DataError(f"{path}:{number}: expected 'Category&video_id&quality&start_s&end_s'; got {line!r}")
        category, video_id, _quality, start, end = fields
        if category not in AVE_CATEGORIES:
            raise DataError(f"{path}:{number}: unknown AVE category {category!r}; expected one of the 28 AVE events")
        try:
            start_s, end_s = float(start), float(end)
        except ValueError:
            raise DataError(f"{path}:{number}: start and end must be seconds; got {start!r} and {end!r}") from None
        entries.append(
            ListEntry(
                clip_id=f"{video_id}_{start}_{end}",
                label=AVE_CATEGORIES.index(category),
                video=video_id,
                start_s=start_s,
                end_s=end_s,
            )
        )
    return entries


def read_kinetics_sounds_list(path: Path) -> list[ListEntry]:
    entries = []
    for number, line in _lines(path):
        fields = [field.strip() for field in line.split(",")]
        if len(fields) != 3 or not fields[2].isdigit() or int(fields[2]) >= KINETICS_SOUNDS_NUM_CLASSES:
            raise DataError(
                f"{path}:{number}: expected 'clip_id,<number>,class_index' with class_index 0..{KINETICS_SOUNDS_NUM_CLASSES - 1}; got {line!r}"
            )
        entries.append(ListEntry(clip_id=fields[0], label=int(fields[2]), video=fields[0]))
    return entries


def youtube_id(clip_id: str) -> str:
    """Return the YouTube video id that starts a Kinetics-Sounds clip id (YouTube ids have 11 characters)."""
    return clip_id[:YOUTUBE_ID_LENGTH]
