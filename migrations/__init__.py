"""SQL migrations, applied in order by bot.core.db.migrate; installed as the package
doryo_migrations."""
