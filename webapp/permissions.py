"""The permissions the lab's roles give (migration 0009), by what they let a person do: one place for
the views that refuse a request (views.roles) and the services that decide who may act."""

UPLOAD = "webapp.add_sample"
ADD_PHOTOGRAPHS = "webapp.add_smearimage"
REVIEW = "webapp.change_cell"
