"""A small example flow: read orders, aggregate them with SQL, write a report."""
import csv
import pathlib

HERE = pathlib.Path(__file__).resolve().parents[2]


def run() -> None:
    rows = list(csv.DictReader(open(HERE / "data" / "orders.csv")))
    total = sum(float(r["amount"]) for r in rows)
    print(f"{len(rows)} orders, {total:.2f} total")


if __name__ == "__main__":
    run()
