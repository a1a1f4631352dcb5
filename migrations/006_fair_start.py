"""006 fair start: a concert's opening time and committed seed; the published draw.

* `concerts.sale_opens_at` (NULL = no fair start), `seed_hex` (the secret seed, revealed only
  after the draw), `seed_commitment` (its SHA-256, public from creation), `drawn_at`.
* `fair_draw_entrants (concert_id, position, entrant)`: the entrant hashes in drawn order,
  what `GET /concerts/{id}/fairness` publishes; PRIMARY KEY (concert_id, position).
"""

import peewee as pw
from peewee_migrate import Migrator


def migrate(migrator: Migrator, database: pw.Database, *, fake: bool = False) -> None:
    """Add the fair-start columns and the draw table."""
    mysql = isinstance(database, pw.MySQLDatabase)

    class DateTime6(pw.DateTimeField):
        field_type = "DATETIME(6)"

    migrator.add_fields(
        "concerts",
        sale_opens_at=DateTime6(null=True),
        seed_hex=pw.CharField(max_length=64, null=True),
        seed_commitment=pw.CharField(max_length=64, null=True),
        drawn_at=DateTime6(null=True),
    )
    settings = " ENGINE=InnoDB DEFAULT CHARSET=ascii COLLATE=ascii_bin" if mysql else ""
    migrator.sql(
        "CREATE TABLE fair_draw_entrants (concert_id BIGINT NOT NULL, position INTEGER NOT NULL, "
        "entrant CHAR(64) NOT NULL, PRIMARY KEY (concert_id, position))" + settings
    )


def rollback(migrator: Migrator, database: pw.Database, *, fake: bool = False) -> None:
    """Drop the draw table and the fair-start columns."""
    migrator.sql("DROP TABLE fair_draw_entrants")
    migrator.remove_fields("concerts", "sale_opens_at", "seed_hex", "seed_commitment", "drawn_at")
