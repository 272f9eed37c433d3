"""A team's data is the team's: export and import (and, later, forgetting)."""
