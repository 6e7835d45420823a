"""Message sources: one module per `publisher_type`, its config model beside it."""
