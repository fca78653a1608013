"""Phrase banks and message bodies: plain text, HTML and quoted e-mail threads."""

from __future__ import annotations

import html
import re
from random import Random

FIRST_NAMES = (
    "Eddie", "Sam", "John", "Dana", "Noa", "Bob", "Maya", "Liam", "Olivia", "Yossi", "Priya", "Chen",
    "Fatima", "Lucas", "Emma", "Omar", "Sofia", "Daniel", "Tamar", "Kevin", "Aisha", "Ruth", "Mateo", "Hannah",
)  # fmt: skip
LAST_NAMES = (
    "Doe", "Adams", "Cohen", "Smith", "Levi", "Hakim", "Brown", "Garcia", "Khan", "Nguyen", "Peretz",
    "Walker", "Rossi", "Mizrahi", "Taylor", "Okafor", "Silva", "Evans", "Friedman", "Patel",
)  # fmt: skip
EMAIL_DOMAINS = ("gmail.com", "outlook.com", "yahoo.com", "icloud.com", "bumpyard.com", "mail.co.il")

CUSTOMER_OPENERS = (
    "Hi, I need some help with my order",
    "Hello, my delivery has not arrived yet",
    "I was charged twice this month",
    "How do I reset my password?",
    "Can I change the address on my account?",
    "The app keeps logging me out",
    "I'd like to cancel my subscription",
    "Is the store open on Sunday?",
    "My invoice shows the wrong amount",
    "I never received the confirmation e-mail",
)
CUSTOMER_FOLLOWUPS = (
    "Thanks, that helped", "It still doesn't work", "Order number is 48213", "ok", "Any update?",
    "I tried that already", "Great, thank you!", "Can you call me instead?", "Attached a screenshot",
    "When will it be fixed?", "hi", "Sure, one moment",
)  # fmt: skip
AGENT_REPLIES = (
    "Thanks for reaching out, I'm looking into it now",
    "Could you send me your order number?",
    "I've issued a refund, it should show in 3-5 business days",
    "Please try logging out and back in",
    "I've updated the address on your account",
    "Sorry for the wait! Let me check with the warehouse",
    "Is there anything else I can help with?",
    "I've escalated this to our billing team",
    "Your replacement is on its way",
    "Happy to help, have a great day!",
)
BOT_LINES = (
    "Hi! I'm the virtual assistant. How can I help?",
    "Please choose one of the options below",
    "Let me connect you with an agent",
    "Could you describe the issue in a few words?",
    "Thanks! An agent will be with you shortly",
)
SUBJECTS = ("checking up on you", "Order 48213", "Invoice question", "Account access", "Delivery delay")
REMARKS = (
    "Sent a link to video Chat - not responded",
    "Customer is a VIP, handle with care",
    "Called back, left a voicemail",
    "Waiting for warehouse confirmation",
)
TAGS = ("billing", "delivery", "vip", "complaint", "account")
ATTACHMENTS = ("screenshot_48213.png", "invoice_0324.pdf", "6_312aac6109.jpg", "receipt.jpeg")


def person(rng: Random) -> tuple[str, str]:
    return rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)


def line(rng: Random, role: int, first: bool) -> str:
    """A plain-text message: role 0 customer, 1 bot, 2 agent."""
    if role == 1:
        return rng.choice(BOT_LINES)
    if role == 2:
        return rng.choice(AGENT_REPLIES)
    return rng.choice(CUSTOMER_OPENERS if first else CUSTOMER_FOLLOWUPS)


def to_html(
    rng: Random, text: str, *, mail: bool, quoted: str | None, sender: str, sent: str
) -> tuple[str, str]:
    """Wrap ``text`` the way CommBox stores bodies: &nbsp;, <br>, and for mail a quoted thread.

    Returns the full body and the message's own part (without the quoted thread).
    """
    greeting = rng.choice(("Hi!", "Hello", "Hi there", ""))
    body = html.escape(text, quote=False)
    if greeting:
        body = f"{greeting}&nbsp;<br>{body}"
    if not mail:
        own = body if rng.random() < 0.5 else f"{body}<br>"
        return own, own
    own = f'<div style="direction: ltr">{body}<br><br><br></div>'
    out = own
    if quoted:
        out += (
            '<div><div dir="ltr"><strong>From: </strong>' + html.escape(sender) + "</div>"
            f'<div dir="ltr"><strong>Sent: </strong>{sent}</div>'
            f'<div dir="ltr"><strong>Subject: </strong>{rng.choice(SUBJECTS)}</div>'
            f'<span><span><br></span></span><div dir="ltr">{quoted}</div></div>'
        )
    return out, own


_TAG = re.compile(r"<br\s*/?>|</div>")
_ANY_TAG = re.compile(r"<[^>]+>")


def html_to_text(body: str) -> str:
    """Plain text of an HTML body (what the transcript shows)."""
    text = _TAG.sub("\n", body)
    text = _ANY_TAG.sub("", text)
    text = html.unescape(text).replace("\xa0", " ")
    return "\n".join(part.strip() for part in text.splitlines() if part.strip())
