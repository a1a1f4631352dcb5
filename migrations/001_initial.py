"""001 initial schema: every table of SPEC §4 with the seed's indexes.

Tables are frozen here (not imported from models/) so later model changes never rewrite
history. SQL DEFAULTs are set on the columns that bulk loads (seed CLI, benchmarks) leave out.
"""

import peewee as pw
from peewee_migrate import Migrator


def migrate(migrator: Migrator, database: pw.Database, *, fake: bool = False) -> None:
    """Create the tables."""
    mysql = isinstance(database, pw.MySQLDatabase)
    now = pw.SQL("DEFAULT CURRENT_TIMESTAMP(6)" if mysql else "DEFAULT CURRENT_TIMESTAMP")
    settings = ["ENGINE=InnoDB", "DEFAULT CHARSET=utf8mb4", "COLLATE=utf8mb4_unicode_ci"] if mysql else []

    class DateTime6(pw.DateTimeField):
        field_type = "DATETIME(6)"

    def default(value: str) -> list[pw.SQL]:
        return [pw.SQL(f"DEFAULT {value}")]

    @migrator.create_model
    class Concert(pw.Model):
        id = pw.BigAutoField()
        title = pw.CharField(max_length=200)
        venue = pw.CharField(max_length=200)
        created_at = DateTime6(constraints=[now])

        class Meta:
            table_name = "concerts"
            table_settings = settings

    @migrator.create_model
    class Schedule(pw.Model):
        id = pw.BigAutoField()
        concert = pw.ForeignKeyField(column_name="concert_id", field="id", model=Concert)
        starts_at = DateTime6()
        total_seats = pw.IntegerField()
        created_at = DateTime6(constraints=[now])

        class Meta:
            table_name = "concert_schedules"
            table_settings = settings

    @migrator.create_model
    class Seat(pw.Model):
        id = pw.BigAutoField()
        schedule = pw.ForeignKeyField(column_name="schedule_id", field="id", model=Schedule)
        number = pw.IntegerField()
        price = pw.BigIntegerField()
        status = pw.CharField(max_length=16, constraints=default("'AVAILABLE'"))
        version = pw.IntegerField(constraints=default("0"))

        class Meta:
            table_name = "seats"
            table_settings = settings
            indexes = [(("schedule_id", "number"), True), (("schedule_id", "status"), False)]

    @migrator.create_model
    class Wallet(pw.Model):
        user_id = pw.BigIntegerField(primary_key=True)
        balance = pw.BigIntegerField(constraints=default("0"))
        version = pw.IntegerField(constraints=default("0"))
        updated_at = DateTime6(constraints=[now])

        class Meta:
            table_name = "point_wallets"
            table_settings = settings

    @migrator.create_model
    class LedgerEntry(pw.Model):
        id = pw.BigAutoField()
        user_id = pw.BigIntegerField()
        type = pw.CharField(max_length=16)
        amount = pw.BigIntegerField()
        balance_after = pw.BigIntegerField()
        reference = pw.CharField(max_length=64, null=True)
        created_at = DateTime6(constraints=[now])

        class Meta:
            table_name = "point_ledger"
            table_settings = settings
            indexes = [(("user_id", "id"), False)]

    @migrator.create_model
    class Reservation(pw.Model):
        id = pw.BigAutoField()
        user_id = pw.BigIntegerField()
        seat = pw.ForeignKeyField(column_name="seat_id", field="id", model=Seat)
        schedule_id = pw.BigIntegerField()
        price = pw.BigIntegerField()
        status = pw.CharField(max_length=16, constraints=default("'HELD'"))
        expires_at = DateTime6()
        version = pw.IntegerField(constraints=default("0"))
        live_seat_id = pw.BigIntegerField(null=True, unique=True)
        job_id = pw.CharField(max_length=64, null=True, unique=True)
        created_at = DateTime6(constraints=[now])
        updated_at = DateTime6(constraints=[now])

        class Meta:
            table_name = "reservations"
            table_settings = settings
            indexes = [(("status", "expires_at"), False), (("user_id", "schedule_id", "status"), False)]

    @migrator.create_model
    class Payment(pw.Model):
        id = pw.BigAutoField()
        reservation = pw.ForeignKeyField(column_name="reservation_id", field="id", model=Reservation, unique=True)
        user_id = pw.BigIntegerField(index=True)
        amount = pw.BigIntegerField()
        idempotency_key = pw.CharField(max_length=128, null=True)
        created_at = DateTime6(constraints=[now])

        class Meta:
            table_name = "payments"
            table_settings = settings
            indexes = [(("user_id", "idempotency_key"), True)]

    @migrator.create_model
    class OutboxEvent(pw.Model):
        id = pw.BigAutoField()
        event_id = pw.CharField(max_length=36, unique=True)
        aggregate_type = pw.CharField(max_length=32)
        aggregate_id = pw.BigIntegerField()
        event_type = pw.CharField(max_length=64)
        topic = pw.CharField(max_length=128)
        message_key = pw.CharField(max_length=64, null=True)
        payload = pw.TextField()
        status = pw.CharField(max_length=16, constraints=default("'PENDING'"))
        created_at = DateTime6(constraints=[now])
        published_at = DateTime6(null=True)
        retry_count = pw.IntegerField(constraints=default("0"))
        last_error = pw.TextField(null=True)

        class Meta:
            table_name = "outbox_events"
            table_settings = settings
            indexes = [(("status", "id"), False)]


def rollback(migrator: Migrator, database: pw.Database, *, fake: bool = False) -> None:
    """Drop the tables, dependants first."""
    for table in ("outbox_events", "payments", "reservations", "point_ledger", "point_wallets", "seats",
                  "concert_schedules", "concerts"):
        migrator.remove_model(table)
