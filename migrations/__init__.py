"""SQL migrations, applied in order by bot.db.migrate; installed as package doryo_migrations."""
