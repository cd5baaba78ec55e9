"""Generate the embedded multi-domain sample (seeded, so the committed files are reproducible).

Writes Amazon Reviews 2018 style files to data/sample/: `<Domain>.csv.gz` (item,user,rating,time)
and `meta_<Domain>.json.gz`. The data is synthetic: items are built from a dozen themes
(space, WWII, detectives, ...) with realistic titles in four domains, and each user follows one
or two themes across domains, so that a model reading titles can carry interests between
domains, which is what the Mixed setting is meant to exploit. Three deliberately bad records
show the quarantine at work in the demo.

    python scripts/make_sample.py [--out data/sample] [--users 3000] [--seed 7]
"""
from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import numpy as np

THEMES = {
    "space": (["Starship", "Nebula", "Orbit", "Galaxy", "Comet", "Eclipse", "Mars", "Frontier"],
              ["Silent", "Distant", "Red", "Last", "Cold", "Infinite"], ["the Void", "Andromeda", "Titan", "the Outer Rim"]),
    "wwii": (["Battalion", "Bomber", "Beachhead", "Resistance", "Blitz", "Convoy", "Enigma", "Paratrooper"],
             ["Iron", "Forgotten", "Brave", "Burning", "Secret", "Bloody"], ["Normandy", "Stalingrad", "Arnhem", "the Pacific"]),
    "fantasy": (["Dragon", "Wizard", "Sword", "Throne", "Sorceress", "Prophecy", "Elf", "Crown"],
                ["Enchanted", "Shadow", "Ancient", "Crystal", "Cursed", "Golden"], ["Eldoria", "the Misty Vale", "Dragonspire", "the Elven Woods"]),
    "detective": (["Murder", "Detective", "Alibi", "Inspector", "Witness", "Case", "Clue", "Verdict"],
                  ["Deadly", "Silent", "Final", "Perfect", "Midnight", "Quiet"], ["Baker Street", "Scotland Yard", "the Old Manor", "Chinatown"]),
    "romance": (["Love", "Heart", "Kiss", "Wedding", "Promise", "Summer", "Letters", "Bride"],
                ["Sweet", "Endless", "Secret", "Tender", "First", "Forever"], ["Paris", "Tuscany", "Notting Hill", "the Seaside"]),
    "cooking": (["Kitchen", "Feast", "Recipes", "Chef", "Bakery", "Spice", "Pasta", "Barbecue"],
                ["Rustic", "Simple", "Southern", "Italian", "Homemade", "Hearty"], ["Provence", "Napoli", "Texas", "the Farmhouse"]),
    "horror": (["Haunting", "Ghost", "Zombie", "Nightmare", "Curse", "Asylum", "Vampire", "Crypt"],
               ["Dark", "Bloody", "Silent", "Wicked", "Hollow", "Unholy"], ["Salem", "the Old House", "Transylvania", "Ravenwood"]),
    "sports": (["Champion", "Stadium", "Playoffs", "Quarterback", "Derby", "Slam Dunk", "Marathon", "Goal"],
               ["Ultimate", "Legendary", "Fast", "Winning", "Great", "Golden"], ["Wembley", "Madison Square", "Daytona", "the Olympics"]),
    "nature": (["Ocean", "Forest", "Wildlife", "Mountains", "Rainforest", "Safari", "Glacier", "Birds"],
               ["Wild", "Hidden", "Majestic", "Frozen", "Living", "Blue"], ["Africa", "the Amazon", "Alaska", "the Arctic"]),
    "western": (["Outlaw", "Cowboy", "Frontier", "Saloon", "Sheriff", "Gunslinger", "Stagecoach", "Ranch"],
                ["Lonesome", "Dusty", "Wild", "Last", "High", "Rugged"], ["Tombstone", "Dodge City", "the Rio Grande", "Laredo"]),
    "cyberpunk": (["Hacker", "Android", "Neon", "Circuit", "Matrix", "Cyborg", "Firewall", "Protocol"],
                  ["Digital", "Chrome", "Synthetic", "Neural", "Electric", "Ghost"], ["Neo Tokyo", "the Grid", "Sector 7", "Night City"]),
    "pirates": (["Pirate", "Treasure", "Captain", "Galleon", "Cutlass", "Buccaneer", "Corsair", "Kraken"],
                ["Black", "Sunken", "Cursed", "Salty", "Golden", "Stormy"], ["Tortuga", "Skull Island", "the Caribbean", "Port Royal"]),
}

DOMAINS = {
    "Books": ["The {adj} {noun}: A Novel", "{noun} of {place}", "{adj} {noun} ({series} Book {n})",
              "The {noun} Chronicles: {place}", "A {noun} in {place}"],
    "Movies_and_TV": ["{adj} {noun} [Blu-ray]", "{noun} of {place} (DVD)", "{series}: Season {n}",
                      "The {adj} {noun} (Director's Cut)", "Return to {place}"],
    "CDs_and_Vinyl": ["{adj} {noun} (Original Motion Picture Soundtrack)", "Songs from {place}",
                      "{noun} Sessions, Vol. {n}", "{adj} {noun} - Live in {place}", "The {noun} Suite"],
    "Video_Games": ["{series} {n} - PlayStation 4", "{adj} {noun}: {place} Edition - Nintendo Switch",
                    "{noun} Tactics - Xbox One", "{series}: {adj} {noun} - PC", "{noun} Legends Deluxe - PlayStation 5"],
}

ITEMS_PER_THEME_DOMAIN = 30


def _id(rng: np.random.Generator, prefix: str, length: int) -> str:
    return prefix + "".join(rng.choice(list("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"), length))


def make_items(rng: np.random.Generator):
    items = []  # (domain, asin, title, theme, series, volume)
    seen_titles = set()
    for domain, templates in DOMAINS.items():
        for theme, (nouns, adjs, places) in THEMES.items():
            made = 0
            while made < ITEMS_PER_THEME_DOMAIN:
                noun, adj, place = rng.choice(nouns), rng.choice(adjs), rng.choice(places)
                series = f"{adj} {rng.choice(nouns)}"
                volume = int(rng.integers(1, 6))
                title = str(rng.choice(templates)).format(adj=adj, noun=noun, place=place, series=series, n=volume)
                if (domain, title) in seen_titles:
                    continue
                seen_titles.add((domain, title))
                items.append((domain, _id(rng, "B0", 8), title, theme, series, volume))
                made += 1
    return items


def make_events(rng: np.random.Generator, items, n_users: int):
    themes = list(THEMES)
    domains = list(DOMAINS)
    by_theme_domain: dict[tuple[str, str], list[int]] = {}
    for i, (domain, _, _, theme, _, _) in enumerate(items):
        by_theme_domain.setdefault((theme, domain), []).append(i)
    # Zipf-like popularity inside each (theme, domain) pool.
    weights = 1.0 / np.arange(1, ITEMS_PER_THEME_DOMAIN + 1) ** 0.9
    weights /= weights.sum()
    events = []  # (domain, asin, user, rating, time)
    for _ in range(n_users):
        user = _id(rng, "A", 13)
        liked = rng.choice(themes, size=2, replace=False)
        domain_pref = rng.dirichlet(np.ones(len(domains)) * 0.8)
        length = int(np.clip(rng.geometric(1 / 14), 5, 60))
        t = int(rng.integers(1_420_070_400, 1_514_764_800))  # 2015-2017
        for _ in range(length):
            r = rng.random()
            theme = liked[0] if r < 0.65 else liked[1] if r < 0.9 else rng.choice(themes)
            domain = domains[rng.choice(len(domains), p=domain_pref)]
            pool = by_theme_domain[(theme, domain)]
            item = pool[rng.choice(len(pool), p=weights)]
            t += int(rng.integers(3_600, 30 * 86_400))
            rating = float(rng.choice([3.0, 4.0, 5.0], p=[0.2, 0.35, 0.45]))
            events.append((domain, items[item][1], user, rating, t))
    return events


def write(out: Path, items, events) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for domain in DOMAINS:
        meta = [json.dumps({"asin": a, "title": title, "category": [domain.replace("_", " "), theme.title()],
                            "brand": series}) for d, a, title, theme, series, _ in items if d == domain]
        rows = [f"{a},{u},{r},{t}" for d, a, u, r, t in events if d == domain]
        if domain == "Books":  # deliberately bad records, quarantined by the pipeline
            meta.insert(7, '{"asin": "B0BROKEN01", "title": "Unclosed quote}')
            rows.insert(11, "B0NOSUCHITEM,A0000000000000,5.0,1500000000")
            rows.insert(23, "B0BROKEN01,A0000000000001,4.0,yesterday")
        with gzip.GzipFile(out / f"meta_{domain}.json.gz", "wb", mtime=0) as fh:
            fh.write(("\n".join(meta) + "\n").encode())
        with gzip.GzipFile(out / f"{domain}.csv.gz", "wb", mtime=0) as fh:
            fh.write(("\n".join(rows) + "\n").encode())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("data/sample"))
    ap.add_argument("--users", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    items = make_items(rng)
    events = make_events(rng, items, args.users)
    write(args.out, items, events)
    print(f"wrote {len(items)} items and {len(events)} events in {len(DOMAINS)} domains to {args.out}")


if __name__ == "__main__":
    main()
