"""A generated bank-marketing CSV with the UCI file's 17 columns, separator and quoting.

    python make_data.py bank.csv 5000

Values are drawn from the real file's categories and plausible ranges, and `y` leans on a few
of them (call duration, a past success), so a model has something to learn.
"""

from __future__ import annotations

import csv
import random
import sys

COLUMNS = [
    "age", "job", "marital", "education", "default", "balance", "housing", "loan", "contact",
    "day", "month", "duration", "campaign", "pdays", "previous", "poutcome", "y",
]  # fmt: skip
JOBS = [
    "admin.", "unknown", "unemployed", "management", "housemaid", "entrepreneur", "student",
    "blue-collar", "self-employed", "retired", "technician", "services",
]  # fmt: skip
MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]


def row(rng: random.Random) -> list:
    duration = int(rng.expovariate(1 / 260))
    poutcome = rng.choices(["unknown", "failure", "other", "success"], [82, 11, 4, 3])[0]
    pdays = -1 if poutcome == "unknown" else rng.randint(1, 800)
    score = duration / 600 + (1.5 if poutcome == "success" else 0) + rng.gauss(0, 0.5)
    return [
        rng.randint(19, 87),
        rng.choice(JOBS),
        rng.choices(["married", "single", "divorced"], [62, 26, 12])[0],
        rng.choices(["primary", "secondary", "tertiary", "unknown"], [15, 51, 30, 4])[0],
        rng.choices(["no", "yes"], [98, 2])[0],
        int(rng.gauss(1400, 3000)),
        rng.choice(["yes", "no"]),
        rng.choices(["no", "yes"], [85, 15])[0],
        rng.choices(["cellular", "unknown", "telephone"], [64, 29, 7])[0],
        rng.randint(1, 31),
        rng.choice(MONTHS),
        duration,
        1 + int(rng.expovariate(1 / 1.8)),
        pdays,
        0 if pdays == -1 else rng.randint(1, 10),
        poutcome,
        "yes" if score > 1.2 else "no",
    ]


def write(path: str, rows: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    with open(path, "w", newline="") as fh:
        # as the UCI file: text quoted, numbers bare
        out = csv.writer(fh, delimiter=";", quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")
        out.writerow(COLUMNS)
        for _ in range(rows):
            out.writerow(row(rng))


if __name__ == "__main__":
    write(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 5000)
