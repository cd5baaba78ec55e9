"""Small files in each real format, written by the tests (contents modelled on the real releases)."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd


def _write(path: Path, text: str | bytes) -> Path:
    data = text.encode("utf-8") if isinstance(text, str) else text
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as fh:
            fh.write(data)
    else:
        path.write_bytes(data)
    return path


def amazon2018(d: Path, gz: bool = True, reviews: bool = False, header: bool = False) -> dict:
    z = ".gz" if gz else ""
    meta = [
        {"asin": "B001", "title": "Canon PIXMA Printer &amp; Scanner", "brand": "Canon", "category": ["Office", "Printers"]},
        {"asin": "B002", "title": "Post-it   Notes", "description": ["Yellow", "3x3"]},
    ]
    lines = [json.dumps(m) for m in meta]
    # The 2014 release writes Python literals, not JSON:
    lines.append("{'asin': 'B003', 'title': 'Swingline Stapler', 'categories': [['Office Products', 'Staplers']]}")
    items = _write(d / f"meta_Office_Products.json{z}", "\n".join(lines) + "\n")
    if reviews:
        revs = [{"reviewerID": "U1", "asin": "B001", "overall": 5.0, "unixReviewTime": 1400000000},
                {"reviewerID": "U1", "asin": "B003", "overall": 4.0, "unixReviewTime": 1400000100},
                {"reviewerID": "U2", "asin": "B002", "overall": 3.0, "unixReviewTime": 1400000200}]
        inter = _write(d / f"reviews_Office_Products_5.json{z}", "\n".join(json.dumps(r) for r in revs) + "\n")
    else:
        rows = "item,user,rating,time\n" if header else ""
        rows += "B001,U1,5.0,1400000000\nB003,U1,4.0,1400000100\nB002,U2,3.0,1400000200\n"
        inter = _write(d / f"Office_Products.csv{z}", rows)
    return {"name": "office", "format": "amazon2018", "domain": "Office", "interactions": str(inter), "items": str(items)}


def amazon2023(d: Path) -> dict:
    meta = [{"parent_asin": "P1", "title": "Wireless Mouse", "store": "Logi", "categories": ["Electronics"],
             "description": ["2.4GHz"]},
            {"parent_asin": "P2", "title": "USB-C Cable", "store": None, "categories": [], "description": []}]
    revs = [{"user_id": "AG1", "parent_asin": "P1", "asin": "P1-black", "rating": 5.0, "timestamp": 1588615855070},
            {"user_id": "AG1", "parent_asin": "P2", "asin": "P2", "rating": 4.0, "timestamp": 1588615955070}]
    items = _write(d / "meta_Electronics.jsonl.gz", "\n".join(json.dumps(m) for m in meta) + "\n")
    inter = _write(d / "Electronics.jsonl.gz", "\n".join(json.dumps(r) for r in revs) + "\n")
    return {"name": "elec", "format": "amazon2023", "domain": "Electronics", "interactions": str(inter), "items": str(items)}


def ml100k(d: Path) -> dict:
    flags = lambda *on: "|".join("1" if i in on else "0" for i in range(19))  # noqa: E731
    items = (f"1|Toy Story (1995)|01-Jan-1995||http://x|{flags(3, 4, 5)}\n"
             f"2|GoldenEye (1995)|01-Jan-1995||http://x|{flags(1, 2, 16)}\n").encode("latin-1")
    items += "3|Misérables, Les (1995)|01-Jan-1995||http://x|".encode("latin-1") + flags(8).encode() + b"\n"
    (d / "ml-100k").mkdir(exist_ok=True)
    i = _write(d / "ml-100k" / "u.item", items)
    r = _write(d / "ml-100k" / "u.data", "196\t1\t3\t881250949\n186\t2\t3\t891717742\n196\t3\t1\t878887116\n")
    return {"name": "ml100k", "format": "movielens", "domain_from": "first_genre", "interactions": str(r), "items": str(i)}


def ml1m(d: Path) -> dict:
    (d / "ml-1m").mkdir(exist_ok=True)
    i = _write(d / "ml-1m" / "movies.dat",
               "1::Toy Story (1995)::Animation|Children's|Comedy\n2::Star Wars: Episode IV (1977)::Action|Sci-Fi\n".encode("latin-1"))
    r = _write(d / "ml-1m" / "ratings.dat", "1::1::5::978300760\n1::2::3::978302109\n2::2::4::978301968\n")
    return {"name": "ml1m", "format": "movielens", "domain_from": "first_genre", "interactions": str(r), "items": str(i)}


def ml_latest(d: Path) -> dict:
    (d / "ml-latest").mkdir(exist_ok=True)
    i = _write(d / "ml-latest" / "movies.csv",
               'movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n2,"American President, The (1995)",Comedy|Drama|Romance\n')
    r = _write(d / "ml-latest" / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,2,4.0,964981247\n")
    return {"name": "latest", "format": "movielens", "domain_from": "first_genre", "interactions": str(r), "items": str(i)}


def recbole(d: Path) -> dict:
    i = _write(d / "toy.item", "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
                                "1\tToy Story\t1995\tAnimation Children's Comedy\n2\tHeat\t1995\tAction Crime Thriller\n")
    r = _write(d / "toy.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                                "7\t1\t4\t881250949\n7\t2\t5\t881250950\n")
    return {"name": "rb", "format": "recbole", "domain_from": "first_genre", "interactions": str(r), "items": str(i)}


def table(d: Path, parquet: bool = False) -> dict:
    items = pd.DataFrame({"sku": ["k1", "k2"], "name": ["Hiking Boots", "Rain Jacket"]})
    inter = pd.DataFrame({"customer": ["c1", "c1"], "sku": ["k1", "k2"], "ts_ms": [1600000000000, 1600000500000]})
    if parquet:
        items.to_parquet(d / "items.parquet")
        inter.to_parquet(d / "events.parquet")
        i, r = d / "items.parquet", d / "events.parquet"
    else:
        items.to_csv(d / "items.csv", index=False)
        inter.to_csv(d / "events.csv", index=False)
        i, r = d / "items.csv", d / "events.csv"
    return {"name": "shop", "format": "table", "domain": "Outdoor", "interactions": str(r), "items": str(i),
            "timestamp_unit": "ms",
            "columns": {"user_id": "customer", "item_id": "sku", "timestamp": "ts_ms", "title": "name"}}
