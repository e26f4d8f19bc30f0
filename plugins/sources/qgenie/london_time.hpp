// Q Genie (MODELLED): the export's local times, dd/mm/yyyy[ HH:MM[:SS]] in
// the UK's civil time, as RFC 3339 with the offset that applied.
//
// Europe/London: GMT (+00:00) in winter, BST (+01:00) from 01:00 UTC on the
// last Sunday of March to 01:00 UTC on the last Sunday of October (the rule
// since 1996; earlier dates are read with the same rule, which is what a
// One Stop Shop export needs). The two awkward hours:
//   - spring gap: 01:00-01:59 local on the last Sunday of March never exists
//     on a clock; such a time is read as GMT (01:30 -> 01:30Z = 02:30+01:00),
//     as if the clock had not yet been put forward;
//   - autumn overlap: 01:00-01:59 local on the last Sunday of October happens
//     twice; the first (BST, +01:00) is taken.
// No time-zone database is read, so results do not depend on the host's
// tzdata or TZ variable.
#pragma once

#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>

namespace qgenie {

// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
constexpr std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) {
    y -= m <= 2;
    const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
    const auto yoe = static_cast<unsigned>(y - era * 400);
    const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

constexpr bool is_leap(std::int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

constexpr unsigned days_in_month(std::int64_t y, unsigned m) {
    constexpr unsigned kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : kDays[m - 1];
}

// Day of the month of the last Sunday of month m.
constexpr unsigned last_sunday(std::int64_t y, unsigned m) {
    unsigned last = days_in_month(y, m);
    std::int64_t days = days_from_civil(y, m, last);
    // 1970-01-01 was a Thursday: weekday 0 = Sunday.
    auto weekday = static_cast<unsigned>(((days % 7) + 7 + 4) % 7);
    return last - weekday;
}

constexpr std::int64_t kHourMs = 3'600'000;
constexpr std::int64_t kDayMs = 86'400'000;

// Whether the UTC instant `utc_ms` falls in British Summer Time.
constexpr bool is_bst(std::int64_t utc_ms, std::int64_t year) {
    std::int64_t start = days_from_civil(year, 3, last_sunday(year, 3)) * kDayMs + kHourMs;
    std::int64_t end = days_from_civil(year, 10, last_sunday(year, 10)) * kDayMs + kHourMs;
    return utc_ms >= start && utc_ms < end;
}

struct LocalTime {
    std::int64_t utc_ms = 0;  // the instant
    int offset_minutes = 0;   // 0 (GMT) or 60 (BST)
    bool date_only = false;   // the value had no time of day
};

// "2025-01-08T13:02:00+00:00": the wall clock of the instant in London, with
// its offset. A date-only value is written as the RFC 3339 full-date.
inline std::string to_rfc3339(const LocalTime& t) {
    std::int64_t local = t.utc_ms + t.offset_minutes * 60'000LL;
    std::int64_t days = local >= 0 ? local / kDayMs : -((-local + kDayMs - 1) / kDayMs);
    std::int64_t rem = local - days * kDayMs;
    // Civil from days (Howard Hinnant).
    std::int64_t z = days + 719468;
    std::int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    std::int64_t doe = z - era * 146097;
    std::int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    std::int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    std::int64_t mp = (5 * doy + 2) / 153;
    std::int64_t d = doy - (153 * mp + 2) / 5 + 1;
    std::int64_t m = mp < 10 ? mp + 3 : mp - 9;
    std::int64_t y = yoe + era * 400 + (m <= 2);
    char buf[96];
    if (t.date_only) {
        std::snprintf(buf, sizeof buf, "%04lld-%02lld-%02lld", static_cast<long long>(y),
                      static_cast<long long>(m), static_cast<long long>(d));
    } else {
        std::snprintf(buf, sizeof buf, "%04lld-%02lld-%02lldT%02lld:%02lld:%02lld+%02d:%02d",
                      static_cast<long long>(y), static_cast<long long>(m),
                      static_cast<long long>(d), static_cast<long long>(rem / kHourMs),
                      static_cast<long long>(rem / 60'000 % 60),
                      static_cast<long long>(rem / 1000 % 60), t.offset_minutes / 60,
                      t.offset_minutes % 60);
    }
    return buf;
}

// The same instant as a string the envelope accepts (a date-only value is
// taken as local midnight).
inline std::string to_rfc3339_instant(LocalTime t) {
    t.date_only = false;
    return to_rfc3339(t);
}

// Reads "dd/mm/yyyy", "dd/mm/yyyy HH:MM" or "dd/mm/yyyy HH:MM:SS" (day,
// month and hour may have one digit; surrounding spaces ignored) as London
// local time. nullopt if malformed or out of range (31/02, 24:00, ...).
inline std::optional<LocalTime> parse_london(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    std::size_t p = 0;
    auto number = [&](std::size_t min_digits, std::size_t max_digits, unsigned& out) {
        std::size_t start = p;
        out = 0;
        while (p < s.size() && p - start < max_digits && s[p] >= '0' && s[p] <= '9')
            out = out * 10 + static_cast<unsigned>(s[p++] - '0');
        return p - start >= min_digits;
    };
    auto expect = [&](char c) {
        if (p < s.size() && s[p] == c) {
            ++p;
            return true;
        }
        return false;
    };
    unsigned d = 0, m = 0, y = 0, hh = 0, mm = 0, ss = 0;
    if (!(number(1, 2, d) && expect('/') && number(1, 2, m) && expect('/') && number(4, 4, y)))
        return std::nullopt;
    bool date_only = p == s.size();
    if (!date_only) {
        std::size_t spaces = p;
        while (p < s.size() && s[p] == ' ') ++p;
        if (p == spaces) return std::nullopt;
        if (!(number(1, 2, hh) && expect(':') && number(2, 2, mm))) return std::nullopt;
        if (p < s.size() && !(expect(':') && number(2, 2, ss))) return std::nullopt;
        if (p != s.size()) return std::nullopt;
    }
    if (m < 1 || m > 12 || d < 1 || d > days_in_month(y, m) || hh > 23 || mm > 59 || ss > 59)
        return std::nullopt;
    // The wall clock read as if it were UTC; then find the offset that applied.
    std::int64_t wall = days_from_civil(y, m, d) * kDayMs +
                        (static_cast<std::int64_t>(hh) * 3600 + mm * 60 + ss) * 1000;
    bool bst_fits = is_bst(wall - kHourMs, y);   // read as BST, is it summer then?
    bool gmt_fits = !is_bst(wall, y);            // read as GMT, is it winter then?
    LocalTime t;
    t.date_only = date_only;
    if (bst_fits) { // includes the autumn overlap: the first occurrence
        t.utc_ms = wall - kHourMs;
        t.offset_minutes = 60;
    } else if (gmt_fits) {
        t.utc_ms = wall;
        t.offset_minutes = 0;
    } else { // the spring gap: read as GMT, shown on the BST clock
        t.utc_ms = wall;
        t.offset_minutes = 60;
    }
    return t;
}

} // namespace qgenie
