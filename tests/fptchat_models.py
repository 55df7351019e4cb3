"""FPTChat's report models as its reports design declares them, in umongo 4, to read our documents with.

umongo 4 runs on marshmallow 4, where a field takes no free keyword
arguments: FPTChat's `max_length=N` is written `validate=Length(max=N)` and
`choices=[...]` is `validate=OneOf([...])` (both checked when a document is
loaded). Its `funnel_data = ListField(...)` is a list of objects here. The
design never defines `JourneyStep`: its fields are those our steps carry.

`*Seed` mixins hold exactly the fields FPTChat's models declare; `*Added`
mixins the fields campaign-counters writes besides. `strict_models` declares both, as umongo's
default strict mode needs (an undeclared field in the database is an
error); `seed_models` declares the seed's fields only and accepts the rest.
"""

from __future__ import annotations

from types import SimpleNamespace

from umongo import Document, EmbeddedDocument, MixinDocument, fields, validate


class JourneyStep(EmbeddedDocument):
    node = fields.StringField(required=True)
    choice = fields.StringField(allow_none=True)
    ts = fields.AwareDateTimeField(required=True)
    sid = fields.StringField()  # the journal entry the step came from (snapshots merge by it)


class CampaignReportsSeed(MixinDocument):
    campaign_id = fields.ObjectIdField(required=True)
    job_id = fields.StringField(validate=validate.Length(max=100), allow_none=True)
    target_users_count = fields.IntField(default=0)
    sent_users_count = fields.IntField(default=0)
    interacted_users_count = fields.IntField(default=0)
    interaction_rate = fields.FloatField(default=0.0)
    completion_rate = fields.FloatField(default=0.0)
    node_analytics = fields.DictField(default=dict)
    funnel_data = fields.ListField(fields.DictField())
    tenant_id = fields.StringField(validate=validate.Length(max=50), required=True)


class CampaignReportsAdded(MixinDocument):
    completed_users_count = fields.IntField()
    total_interactions = fields.IntField()
    avg_completion_time = fields.FloatField(allow_none=True)
    status = fields.StringField(allow_none=True)
    updated_at = fields.AwareDateTimeField(allow_none=True)
    snapshot_at = fields.AwareDateTimeField()


class OverviewReportsSeed(MixinDocument):
    report_date = fields.AwareDateTimeField(required=True)
    report_type = fields.StringField(validate=validate.OneOf(["daily", "weekly", "monthly"]))
    campaigns_count = fields.IntField(default=0)
    total_target_users = fields.IntField(default=0)
    total_sent_users = fields.IntField(default=0)
    total_interactions = fields.IntField(default=0)
    avg_interaction_rate = fields.FloatField(default=0.0)
    tenant_id = fields.StringField(validate=validate.Length(max=50), required=True)


class OverviewReportsAdded(MixinDocument):
    timezone = fields.StringField()
    window_start = fields.AwareDateTimeField()
    window_end = fields.AwareDateTimeField()
    total_interacted_users = fields.IntField()
    campaigns_completed = fields.IntField()
    campaigns_running = fields.IntField()
    campaigns_error = fields.IntField()
    computed_at = fields.AwareDateTimeField()


class UserJourneyReportsSeed(MixinDocument):
    campaign_id = fields.ObjectIdField(required=True)
    job_id = fields.StringField(validate=validate.Length(max=100), required=True)
    user_id = fields.StringField(validate=validate.Length(max=100), required=True)
    journey_path = fields.ListField(fields.EmbeddedField(JourneyStep))
    completed = fields.BooleanField(default=False)
    completion_time = fields.FloatField(allow_none=True)
    tenant_id = fields.StringField(validate=validate.Length(max=50), required=True)


class UserJourneyReportsAdded(MixinDocument):
    exit_node = fields.StringField(allow_none=True)
    total_interactions = fields.IntField()
    snapshot_at = fields.AwareDateTimeField()


def _register(instance, strict: bool) -> SimpleNamespace:
    """The three models (and JourneyStep) registered in a umongo instance."""
    meta = {"strict": strict}
    models = SimpleNamespace(JourneyStep=instance.register(JourneyStep))
    for name, seed, added in [("CampaignReports", CampaignReportsSeed, CampaignReportsAdded),
                              ("OverviewReports", OverviewReportsSeed, OverviewReportsAdded),
                              ("UserJourneyReports", UserJourneyReportsSeed, UserJourneyReportsAdded)]:
        instance.register(seed)
        bases = (Document, seed, instance.register(added)) if strict else (Document, seed)
        template = type(name, bases, {"Meta": type("Meta", (), {"collection_name": name, **meta})})
        setattr(models, name, instance.register(template))
    return models


def strict_models(instance) -> SimpleNamespace:
    """FPTChat's fields and the added ones declared; umongo's default strict mode."""
    return _register(instance, strict=True)


def seed_models(instance) -> SimpleNamespace:
    """FPTChat's fields only, with `strict = False` so the added fields are accepted."""
    return _register(instance, strict=False)
