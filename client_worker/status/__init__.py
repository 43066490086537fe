"""What the backend hears about a job: the status store in Redis and the webhook sender."""
