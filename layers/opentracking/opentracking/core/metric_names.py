"""Every metric the functions publish (CloudWatch namespace OpenTracking, unit Count), in one place.

Dashboards and the template's alarms name these; a name written once here cannot drift between the code
that counts and the alarm that watches (tests/unit/test_template.py checks the alarms and dashboard)."""

from enum import StrEnum


class Metric(StrEnum):
    # Submission
    MESSAGES_ACCEPTED = "MessagesAccepted"
    COPIES_STORED = "CopiesStored"
    COPIES_TRACKED = "CopiesTracked"
    COPIES_SUPPRESSED = "CopiesSuppressed"  # copies without a pixel: their recipient opted out
    TAG_LIMIT_REACHED = "TagLimitReached"  # a message's new tag dropped: its domain has TAG_LIMIT tags
    SUBMISSION_ROLLED_BACK = "SubmissionRolledBack"
    # Delivery
    COPIES_SENT = "CopiesSent"  # handed to SES, which reports the outcome later
    COPIES_DELIVERED = "CopiesDelivered"
    COPIES_FAILED = "CopiesFailed"  # permanently: a bounce, or the retries ran out
    DELIVERY_RETRIES = "DeliveryRetries"  # temporary failures, each retried later
    DELIVERY_THROTTLED = "DeliveryThrottled"  # sends the transport refused as too fast, tried again soon
    SES_EVENTS = "SesEvents"  # SES's reports on copies, recorded
    SES_REPORT_WITHOUT_COPY = "SesReportWithoutCopy"  # the copy expired or was erased before SES reported
    SEND_JOB_WITHOUT_COPY = "SendJobWithoutCopy"  # the copy expired or was erased before it was sent
    # Unsubscribe links
    UNSUBSCRIBES_RECORDED = "UnsubscribesRecorded"
    UNSUBSCRIBE_WITHOUT_COPY = "UnsubscribeWithoutCopy"  # the copy expired or was erased first
    INVALID_UNSUBSCRIBE_TOKEN = "InvalidUnsubscribeToken"  # noqa: S105 - a metric name, not a secret
    # The pixel and its redrive
    OPEN_RECORDED = "OpenRecorded"
    OPEN_SPILLED = "OpenSpilled"  # DynamoDB or the keys out of reach: parked on the spill queue
    OPEN_LOST = "OpenLost"  # not even the spill queue answered (alarmed)
    OPEN_REDRIVEN = "OpenRedriven"
    INVALID_TOKEN = "InvalidToken"  # noqa: S105 - a metric name, not a secret
    # Clicks and their redrive
    CLICK_RECORDED = "ClickRecorded"
    CLICK_SPILLED = "ClickSpilled"
    CLICK_LOST = "ClickLost"  # alarmed
    CLICK_REDRIVEN = "ClickRedriven"
    INVALID_CLICK_TOKEN = "InvalidClickToken"  # noqa: S105 - a metric name, not a secret
    # The stream consumer
    OPENED_EVENTS = "OpenedEvents"
    MACHINE_OPENED_EVENTS = "MachineOpenedEvents"  # opens by proxies and scanners, kept apart
    UNIQUE_OPENS = "UniqueOpens"
    DERIVED_OPENS = "DerivedOpens"  # a click with no open before it implies one
    CLICKED_EVENTS = "ClickedEvents"
    MACHINE_CLICKED_EVENTS = "MachineClickedEvents"
    UNIQUE_CLICKS = "UniqueClicks"
    OPEN_WITHOUT_COPY = "OpenWithoutCopy"  # its copy expired, was erased or never existed: dropped
    CLICK_WITHOUT_COPY = "ClickWithoutCopy"
    ACCEPTED_AFTER_ERASURE = "AcceptedAfterErasure"
    BULK_OPENS_FALLBACK = "BulkOpensFallback"  # a bulk transaction cancelled: those opens one by one
    # Domains, keys and their health
    DOMAIN_CREATED = "DomainCreated"
    API_KEY_CREATED = "ApiKeyCreated"
    DOMAINS_CHECKED = "DomainsChecked"
    DOMAINS_CNAME_INVALID = "DomainsCnameInvalid"
    DOMAINS_CNAME_UNKNOWN = "DomainsCnameUnknown"
    TRACKING_DOMAINS_UNHEALTHY = "TrackingDomainsUnhealthy"  # alarmed
    CNAME_BROKE = "CnameBroke"
    CNAME_RECOVERED = "CnameRecovered"
    DOMAINS_HTTPS_BROKEN = "DomainsHttpsBroken"
    TRACKING_HOSTS_NOT_SERVING = "TrackingHostsNotServing"
    VALIDATION_RECORDS_MISSING = "ValidationRecordsMissing"
    SENDING_RECORDS_INVALID = "SendingRecordsInvalid"  # SPF, DKIM or MAIL FROM records not as needed
    # Per tracking domain (dimension `domain`), from the scheduled check
    TRACKING_CERT_DAYS_LEFT = "TrackingCertDaysLeft"
    TRACKING_CNAME_VALID = "TrackingCnameValid"  # 1 or 0
    # Webhooks
    WEBHOOK_CREATED = "WebhookCreated"
    WEBHOOKS_QUEUED = "WebhooksQueued"
    WEBHOOK_DELIVERED = "WebhookDelivered"
    WEBHOOK_REJECTED = "WebhookRejected"  # the receiver answered 406: not retried, as Mailgun
    WEBHOOK_REFUSED = "WebhookRefused"  # the URL resolved to an address that is not public
    WEBHOOK_DUPLICATE = "WebhookDuplicate"
    WEBHOOK_WITHDRAWN = "WebhookWithdrawn"  # the webhook was removed before its delivery
    WEBHOOK_RETRY_SCHEDULED = "WebhookRetryScheduled"
    WEBHOOK_DEAD_LETTERED = "WebhookDeadLettered"
    # Privacy
    RECIPIENT_COPIES_ERASED = "RecipientCopiesErased"
