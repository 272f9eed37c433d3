"""The workspace's task list: tasks the agent made (create_task) or people added."""
