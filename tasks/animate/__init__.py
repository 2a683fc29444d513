"""Stage: animate."""
