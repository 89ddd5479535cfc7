"""The ledger: SQLAlchemy 2 typed models. Same schema on SQLite and PostgreSQL (Alembic migrations)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from dispatcher.domain.states import CampaignStatus

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both databases (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the ledger; use an aware UTC datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Campaign(Base):
    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    title: Mapped[str] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(20), default=CampaignStatus.DRAFT)  # a CampaignStatus
    urgency: Mapped[str] = mapped_column(String(10), default="urgent")
    route_policy: Mapped[str] = mapped_column(String(20))
    schedule: Mapped[dict[str, Any]] = mapped_column(JSON)
    deadline: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sender: Mapped[dict[str, Any]] = mapped_column(JSON)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)  # the validated campaign file, for re-rendering
    spec_sha256: Mapped[str] = mapped_column(String(64))
    source_path: Mapped[str] = mapped_column(Text, default="")
    scheduled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # when an operator scheduled it
    letter_date: Mapped[date | None] = mapped_column(Date)  # the date printed on the letter, fixed at scheduling
    # a CopiesWhen: when the supporter copies go
    copies: Mapped[str] = mapped_column(String(20), default="after-delivery", server_default="after-delivery")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    letter: Mapped[LetterTemplate] = relationship(
        back_populates="campaign", uselist=False, cascade="all, delete-orphan"
    )
    addressees: Mapped[list[Addressee]] = relationship(
        back_populates="campaign", order_by="Addressee.position", cascade="all, delete-orphan"
    )
    deliveries: Mapped[list[Delivery]] = relationship(back_populates="campaign", cascade="all, delete-orphan")


class LetterTemplate(Base):
    __tablename__ = "letters"

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), unique=True)
    subject: Mapped[str] = mapped_column(String(300))
    template_name: Mapped[str] = mapped_column(String(300))
    template_source: Mapped[str] = mapped_column(Text)
    template_sha256: Mapped[str] = mapped_column(String(64))

    campaign: Mapped[Campaign] = relationship(back_populates="letter")


class Addressee(Base):
    __tablename__ = "addressees"
    __table_args__ = (UniqueConstraint("campaign_id", "role", "position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(2))  # "to" | "cc"
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200))
    title: Mapped[str] = mapped_column(String(200), default="")
    organisation: Mapped[str] = mapped_column(String(300), default="")
    salutation: Mapped[str | None] = mapped_column(String(300))
    address: Mapped[list[str]] = mapped_column(JSON, default=list)
    country: Mapped[str] = mapped_column(String(2))
    timezone: Mapped[str] = mapped_column(String(64))
    phones: Mapped[list[str]] = mapped_column(JSON, default=list)  # contact details, never routes

    campaign: Mapped[Campaign] = relationship(back_populates="addressees")
    routes: Mapped[list[Route]] = relationship(
        back_populates="addressee", order_by="Route.position", cascade="all, delete-orphan"
    )


class Route(Base):
    __tablename__ = "routes"
    __table_args__ = (UniqueConstraint("addressee_id", "position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    addressee_id: Mapped[int] = mapped_column(ForeignKey("addressees.id", ondelete="CASCADE"), index=True)
    channel: Mapped[str] = mapped_column(String(5))  # "fax" | "email"
    position: Mapped[int] = mapped_column(Integer)  # order of fallback within the addressee
    raw_value: Mapped[str] = mapped_column(String(320))  # as written in the campaign file
    value: Mapped[str | None] = mapped_column(String(320))  # E.164 or normalised email; None if invalid
    valid: Mapped[bool] = mapped_column(Boolean, default=True)
    problem: Mapped[str | None] = mapped_column(Text)

    addressee: Mapped[Addressee] = relationship(back_populates="routes")


class SupporterList(Base):
    """A named list of supporters, apart from any campaign; campaigns name the lists they copy."""

    __tablename__ = "supporter_lists"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    members: Mapped[list[Supporter]] = relationship(back_populates="list", cascade="all, delete-orphan")


class Supporter(Base):
    """One person on one list, with their consent as recorded. Personal data: never logged.

    ``email`` is normalised (domain in IDNA ASCII, lower case; see supporter_import.normalise_email).
    Only a member with ``consent`` true receives anything."""

    __tablename__ = "supporters"
    __table_args__ = (UniqueConstraint("list_id", "email"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("supporter_lists.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(320), index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    locale: Mapped[str | None] = mapped_column(String(35))
    consent: Mapped[bool] = mapped_column(Boolean, default=False)
    consent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    consent_source: Mapped[str | None] = mapped_column(String(300))
    fields: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # custom columns, kept as data
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    list: Mapped[SupporterList] = relationship(back_populates="members")


class CampaignList(Base):
    """A supporter list a campaign copies."""

    __tablename__ = "campaign_lists"

    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("supporter_lists.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, default=0)


class Suppression(Base):
    """The organisation-wide suppression list: an address that receives no copy, whatever list it is on.

    Keyed by the SHA-256 of the normalised address (suppressions.address_hash), so that the entry
    survives the person's erasure without keeping their address."""

    __tablename__ = "suppressions"

    email_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    reason: Mapped[str] = mapped_column(String(20))  # "unsubscribed" | "hard-bounce" | "complaint"
    source: Mapped[str] = mapped_column(String(100))  # "unsubscribe-page", "one-click", "webhook:postmark", ...
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaigns.id", ondelete="SET NULL"))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Delivery(Base):
    """One letter (or supporter copy) over one route: the unit that is claimed, sent and recorded."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("campaign_id", "addressee_id", "route_id"),
        UniqueConstraint("campaign_id", "supporter_id"),
        Index("ix_deliveries_due", "state", "not_before"),
        Index("ix_deliveries_campaign_state", "campaign_id", "state"),
        Index("ix_deliveries_destination", "destination"),  # the fax line check of every claim
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(10))  # a DeliveryKind
    addressee_id: Mapped[int | None] = mapped_column(ForeignKey("addressees.id", ondelete="CASCADE"))
    route_id: Mapped[int | None] = mapped_column(ForeignKey("routes.id", ondelete="CASCADE"))
    # NULL once the supporter is erased: the delivery stays, counted, without the person
    supporter_id: Mapped[int | None] = mapped_column(ForeignKey("supporters.id", ondelete="SET NULL"))
    channel: Mapped[str] = mapped_column(String(5))
    destination: Mapped[str] = mapped_column(String(320))
    route_position: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(12), default="planned")
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime)
    gateway: Mapped[str | None] = mapped_column(String(50))
    provider_id: Mapped[str | None] = mapped_column(String(200), index=True)
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    document_sha256: Mapped[str | None] = mapped_column(String(64))
    page_count: Mapped[int | None] = mapped_column(Integer)
    # False once sent through a gateway that never reports delivery (SMTP): "submitted" is then final
    expects_report: Mapped[bool] = mapped_column(Boolean, default=True)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    campaign: Mapped[Campaign] = relationship(back_populates="deliveries")
    addressee: Mapped[Addressee | None] = relationship()
    route: Mapped[Route | None] = relationship()
    supporter: Mapped[Supporter | None] = relationship()
    attempts: Mapped[list[Attempt]] = relationship(back_populates="delivery", order_by="Attempt.number")


class Attempt(Base):
    """One gateway call for a delivery, with its outcome and the provider's evidence."""

    __tablename__ = "attempts"
    __table_args__ = (UniqueConstraint("delivery_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("deliveries.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    gateway: Mapped[str] = mapped_column(String(50))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[str | None] = mapped_column(String(12))  # submitted|transient|permanent|unknown
    provider_id: Mapped[str | None] = mapped_column(String(200))
    error_code: Mapped[str | None] = mapped_column(String(100))
    detail: Mapped[str | None] = mapped_column(Text)
    document_sha256: Mapped[str | None] = mapped_column(String(64))
    evidence: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    delivery: Mapped[Delivery] = relationship(back_populates="attempts")


class DeliveryEvent(Base):
    """Append-only: every state change and every provider status report (update/delete are refused)."""

    __tablename__ = "delivery_events"
    __table_args__ = (
        UniqueConstraint("delivery_id", "provider_event_id"),
        Index("ix_delivery_events_campaign", "campaign_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("deliveries.id", ondelete="CASCADE"), index=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(100))  # "planner", "worker:host:pid", "webhook:telnyx", "operator"
    from_state: Mapped[str | None] = mapped_column(String(12))
    to_state: Mapped[str] = mapped_column(String(12))
    reason: Mapped[str] = mapped_column(Text, default="")
    error_class: Mapped[str | None] = mapped_column(String(12))
    provider_id: Mapped[str | None] = mapped_column(String(200))
    provider_event_id: Mapped[str | None] = mapped_column(String(200))
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class GatewayState(Base):
    """A gateway's pause and circuit-breaker state, shared by every process (dispatcher/domain/gateway_pauses.py).

    One row per gateway name once something happened to it; no row means "sending, nothing counted"."""

    __tablename__ = "gateway_states"

    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    paused_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # None: the gateway sends
    cause: Mapped[str | None] = mapped_column(String(20))  # "configuration" | "breaker", while paused
    reason: Mapped[str] = mapped_column(Text, default="")
    setting: Mapped[str | None] = mapped_column(String(200))  # the variable to check, never its value
    trial_after: Mapped[datetime | None] = mapped_column(UTCDateTime)  # breaker: one trial send from then on
    trial_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # breaker: when that trial send was taken
    failures: Mapped[int] = mapped_column(Integer, default=0)  # consecutive transport failures
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime)  # the first of them
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class User(Base):
    """A person who works in the console or through the API (dispatcher/domain/accounts.py)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    roles: Mapped[str] = mapped_column(String(100))  # comma-separated: manager, operator, viewer
    password_hash: Mapped[str | None] = mapped_column(String(200))  # argon2id; None: API tokens only
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ApiToken(Base):
    """An API token, kept as the SHA-256 of its value (the value is shown once, when it is created)."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    label: Mapped[str] = mapped_column(String(100))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship()


class WebSession(Base):
    """A console login: the cookie holds a random value, the ledger its SHA-256 and the form token (CSRF)."""

    __tablename__ = "web_sessions"

    id_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship()


class LoginFailure(Base):
    """A refused console login, counted to rate-limit guessing (per name and per client address)."""

    __tablename__ = "login_failures"
    __table_args__ = (
        Index("ix_login_failures_name_at", "name", "at"),
        Index("ix_login_failures_client_at", "client", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    client: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class OperatorAction(Base):
    """Append-only: what a person did through the console, the API or the CLI, with their reason."""

    __tablename__ = "operator_actions"
    __table_args__ = (Index("ix_operator_actions_campaign", "campaign_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(100))  # "user:alice", "token:alice/ci", "cli:root"
    action: Mapped[str] = mapped_column(String(40))  # "campaign.schedule", "delivery.retry", ...
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaigns.id", ondelete="SET NULL"))
    delivery_id: Mapped[int | None] = mapped_column(ForeignKey("deliveries.id", ondelete="SET NULL"))
    reason: Mapped[str] = mapped_column(Text, default="")
