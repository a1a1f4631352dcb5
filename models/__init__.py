"""The domain: peewee tables and the functions that change them. No Flask, no Dramatiq."""
