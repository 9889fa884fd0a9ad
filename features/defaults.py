"""The default feature set: the signals the field calls high-impact.

Recent browsing (pages, time on page, scroll depth), clickstream (email and
site clicks), product interactions (views, cart adds and removals, wishlist,
checkout), response to campaigns (sends, opens, clicks, click-through),
purchases, device, location and time of day; windows from 30 minutes to 30
days.

>>> len(DEFAULT_SPECS)
44
"""

from __future__ import annotations

from datetime import timedelta

from features.events import (
    ADD_TO_CART,
    CHECKOUT_START,
    EMAIL_CLICK,
    EMAIL_OPEN,
    EMAIL_SEND,
    PAGE_VIEW,
    PRODUCT_VIEW,
    PURCHASE,
    REMOVE_FROM_CART,
    SEARCH,
    WISHLIST_ADD,
)
from features.specs import (
    ANY,
    CartValue,
    Eq,
    HourOfDay,
    LastValue,
    Ratio,
    Recency,
    Relative,
    Spec,
    Weekend,
    WindowCount,
    WindowDistinct,
    WindowMean,
    WindowSum,
)

M30, H1, H24, D7, D30 = (
    timedelta(minutes=30),
    timedelta(hours=1),
    timedelta(hours=24),
    timedelta(days=7),
    timedelta(days=30),
)

DEFAULT_SPECS: tuple[Spec, ...] = (
    # recent browsing
    WindowCount(PAGE_VIEW, M30),
    WindowCount(PAGE_VIEW, H24),
    WindowCount(ANY, H1),
    WindowCount(ANY, H24),
    WindowSum("time_on_page_s", ANY, H24),
    WindowMean("time_on_page_s", PRODUCT_VIEW, H24),
    WindowMean("scroll_depth", PRODUCT_VIEW, H24),
    WindowDistinct("session_id", ANY, D7),
    WindowCount(SEARCH, H24),
    # product interactions
    WindowCount(PRODUCT_VIEW, H1),
    WindowCount(PRODUCT_VIEW, H24),
    WindowCount(PRODUCT_VIEW, D7),
    WindowDistinct("category", PRODUCT_VIEW, H24),
    WindowDistinct("product_id", PRODUCT_VIEW, D7),
    WindowCount(ADD_TO_CART, H1),
    WindowCount(ADD_TO_CART, H24),
    WindowCount(ADD_TO_CART, D7),
    WindowSum("price", ADD_TO_CART, H24),
    WindowDistinct("category", ADD_TO_CART, H24),
    WindowCount(REMOVE_FROM_CART, H24),
    WindowCount(WISHLIST_ADD, D7),
    WindowCount(CHECKOUT_START, H24),
    WindowCount(CHECKOUT_START, D7),
    CartValue(D7),
    # purchases
    WindowCount(PURCHASE, D7),
    WindowCount(PURCHASE, D30),
    WindowSum("revenue", PURCHASE, D30),
    # campaigns
    WindowCount(EMAIL_SEND, D7),
    WindowCount(EMAIL_OPEN, D7),
    WindowCount(EMAIL_CLICK, D7),
    Ratio(WindowCount(EMAIL_OPEN, D30), WindowCount(EMAIL_SEND, D30)),
    Ratio(WindowCount(EMAIL_CLICK, D30), WindowCount(EMAIL_SEND, D30)),
    # recency
    Recency(ANY),
    Recency(PRODUCT_VIEW),
    Recency(ADD_TO_CART),
    Recency(CHECKOUT_START),
    Recency(PURCHASE),
    Recency(EMAIL_CLICK),
    # device, location, time of day
    Ratio(WindowCount(ANY, D30, where=Eq("device", "mobile")), WindowCount(ANY, D30)),
    LastValue("device"),
    LastValue("country"),
    HourOfDay("sin"),
    HourOfDay("cos"),
    Weekend(),
)

D21 = timedelta(days=21)
_SESSIONS_21D = WindowDistinct("session_id", ANY, D21)

# A user's longer-run habits, each with what it means in words when high and
# when low (for cluster descriptions): rates and levels rather than volumes
# (volumes all move together with activity and drown the rest): activity,
# funnel depth, campaign response, device mix and price level over three weeks.
_HABITS: tuple[tuple[Spec, str, str], ...] = (
    (_SESSIONS_21D, "visits often", "visits rarely"),
    (Ratio(WindowCount(ADD_TO_CART, D21), WindowCount(PRODUCT_VIEW, D21)), "adds many viewed items to cart",
     "rarely adds to cart"),
    (Ratio(WindowCount(PURCHASE, D21), _SESSIONS_21D), "buys on many visits", "rarely buys"),
    (Ratio(WindowCount(EMAIL_OPEN, D21), WindowCount(EMAIL_SEND, D21)), "opens emails", "ignores emails"),
    (Ratio(WindowCount(EMAIL_CLICK, D21), WindowCount(EMAIL_SEND, D21)), "clicks emails", "rarely clicks emails"),
    (Ratio(WindowCount(ANY, D21, where=Eq("device", "mobile")), WindowCount(ANY, D21)), "mostly on mobile",
     "mostly on desktop"),
    (WindowMean("price", PRODUCT_VIEW, D21), "views dear products", "views cheap products"),
)  # fmt: skip
HABIT_SPECS: tuple[Spec, ...] = tuple(spec for spec, _, _ in _HABITS)
_MEAN_PRICE = HABIT_SPECS[-1]


def _price_level(prices: Relative) -> Spec:
    return WindowMean(prices, PRODUCT_VIEW, D21)


def cluster_specs(prices: Relative) -> tuple[Spec, ...]:
    """What clusters are found over: the habits, with the price level taken
    against each category's usual price (``prices``, learned from history by
    :meth:`features.offline.OfflineFeatures.reference`) rather than as a
    plain mean, which mostly says which categories a user likes.

    >>> [s.name for s in cluster_specs(Relative.of("price", "category", {}, 1.0))][-1]
    'product_view_price_vs_category_mean_21d'
    """
    return (*[s for s in HABIT_SPECS if s != _MEAN_PRICE], _price_level(prices))


# The habits in words, for cluster descriptions: (what high means, what low means).
HABIT_WORDS: dict[str, tuple[str, str]] = {
    **{spec.name: (high, low) for spec, high, low in _HABITS},
    _price_level(Relative.of("price", "category", {}, 1.0)).name: (  # the name does not depend on the reference
        "views dear products for their category",
        "views cheap products for their category",
    ),
}

# What a rule may name and the service keeps per user: the default set and the
# habits. A cluster model's own specs join these in the service.
RULE_SPECS: tuple[Spec, ...] = (*DEFAULT_SPECS, *[s for s in HABIT_SPECS if s not in DEFAULT_SPECS])
