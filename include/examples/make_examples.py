"""Rebuild the example tables from the copies scikit-learn bundles (run: python include/examples/make_examples.py).

Deterministic: the same scikit-learn data gives byte-identical files (PROVENANCE.md holds their sha256).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
from sklearn.datasets import load_breast_cancer, load_diabetes

HERE = Path(__file__).resolve().parent


def breast_cancer() -> pd.DataFrame:
    """Wisconsin Diagnostic Breast Cancer: one row per patient, no dates (import with --days N)."""
    data = load_breast_cancer(as_frame=True)
    cols = ["mean radius", "mean texture", "mean perimeter", "mean area", "mean smoothness", "mean compactness",
            "mean concavity", "mean concave points", "mean symmetry", "worst radius", "worst texture", "worst area"]
    df = data.frame[cols].round(5)
    df.columns = [c.replace(" ", "_") for c in cols]
    df.insert(0, "patient_id", [f"P{i:04d}" for i in range(len(df))])
    df["diagnosis"] = data.target.map(dict(enumerate(data.target_names)))  # 0 malignant, 1 benign
    return df


def diabetes_visits() -> pd.DataFrame:
    """Diabetes (Efron et al. 2004): one row per patient visit, with a visit time we assign (the
    original has none): row i on day i mod 12 from 2025-03-01, at hour (7 i) mod 24. Target: disease
    progression one year after baseline (a number: regression)."""
    data = load_diabetes(as_frame=True, scaled=False)
    df = data.frame.rename(columns={"s1": "tc", "s2": "ldl", "s3": "hdl", "s4": "tch", "s5": "ltg", "s6": "glu",
                                    "target": "progression"})
    df["sex"] = df["sex"].map({1.0: "F", 2.0: "M"})  # the coding is 1/2; which is which is not documented
    n = len(df)
    times = [pd.Timestamp("2025-03-01", tz="UTC") + pd.Timedelta(days=i % 12, hours=(7 * i) % 24) for i in range(n)]
    df.insert(0, "visit_time", [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in times])
    df.insert(0, "visit_id", [f"V{i:04d}" for i in range(n)])
    return df


def main() -> None:
    for name, make in (("breast_cancer/patients.csv", breast_cancer), ("diabetes_visits/visits.csv", diabetes_visits)):
        path = HERE / name
        path.parent.mkdir(parents=True, exist_ok=True)
        make().to_csv(path, index=False, lineterminator="\n")
        print(f"{path.relative_to(HERE)}  sha256 {hashlib.sha256(path.read_bytes()).hexdigest()}")


if __name__ == "__main__":
    main()
