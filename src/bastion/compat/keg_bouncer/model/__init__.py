"""KegBouncer's ``keg_bouncer.model``: ``entities``, ``mixins``, ``migration``, ``utils``."""
