#pragma once

// Personal data in free text, and the field transforms of profiles.
//
// Everything here is a pure function of its input, fast (no std::regex on
// the record path: hand-written scanners), and never logs.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace switchboard::pii {

// What redact() finds, each replaced by its placeholder "[TYPE]". For the
// kinds introduced by a keyword (CVV, expiry, and bank details after one) the
// value is replaced and the keyword kept: "cvv 123" -> "cvv [CVV]".
enum class Kind {
    Card,      // payment card number: 13-19 digits, contiguous or grouped 4-4-4-4[-3], 4-6-5,
               // 4-6-4 with spaces or dashes, Luhn-valid, first digit 2-6 or 8 -> [CARD]
    Cvv,       // 3-4 digits after "CVV", "cvc:", "security code is", "digits on the back"...,
               // or straight after a card number -> [CVV]
    Expiry,    // MM/YY, MM/YYYY, M/YY, MM-YY, MMYY after "exp", "expiry (date)", "expires",
               // "valid to/until/thru"..., or straight after a card number -> [EXPIRY]
    Nino,      // National Insurance number "QQ 12 34 56 C", "QQ123456C", "qq 123456 c": the format
               // only, prefix NOT checked (test data uses the never-issued QQ) -> [NINO]
    Phone,     // UK numbers: "0151 496 0732", "07700 900312", "+44 7700 900312", "(0151) 4960732",
               // "447700900312", "+44 (0)151 496 0732", "0044...", "0800 123 456" -> [PHONE]
    Email,     // "name@example.org" -> [EMAIL]
    SortCode,  // 12-34-56, 12 34 56 or 123456 after "sort code"/"s/c"; 12-34-56 or 12 34 56
               // next to an 8-digit account number; 12-34-56 alone unless it reads as a
               // dd-mm-yy date -> [SORT_CODE]
    Account,   // 8 digits (or 4 4) after "account"/"acct"/"acc"/"a/c" [number/no], or next
               // to a sort code -> [ACCOUNT]
    Postcode,  // full UK postcodes "L8 0ZZ", "l80zz", "SW1A 1AA", "M1 1AE"; an outward code
               // alone ("L8") stays -> [POSTCODE]
};

const char* placeholder(Kind kind); // "[CARD]", "[NINO]", ...

struct Finding {
    Kind kind;
    std::size_t begin; // byte offsets into the input
    std::size_t end;
};

// Replaces every kind of PII above with its placeholder. `found` (optional)
// is cleared, then receives what was replaced, in order. Text without PII
// comes back unchanged (byte for byte). UTF-8 safe: never splits a multi-byte
// sequence. Matches never start or end inside a word: letters of any script
// are word characters ("Łukasz07700900312" stays), except those of scripts
// written without spaces (CJK, kana, Thai), so "电话07700900312" is found.
std::string redact(std::string_view text, std::vector<Finding>* found = nullptr);

// Only card data: card numbers, and CVV and expiry phrases wherever they are
// (a CVV often comes in a message of its own). What the journal applies to
// every string at ingest, whatever the profiles say, so that card data is
// never at rest. Returns nullopt when nothing changed (the common case,
// without allocating).
std::optional<std::string> redact_cards(std::string_view text);

bool luhn_valid(std::string_view digits); // digits only

// Profile transforms ---------------------------------------------------------

// Keeps the last `keep_last` characters (UTF-8 code points), replacing the
// others with '*': mask("07700900312", 4) == "*******0312". At least half of
// the characters are always masked, whatever keep_last says, so a short
// value is never revealed whole ("123" keeps "3"). keep_last <= 0 masks all;
// an invalid UTF-8 byte counts as one character.
std::string mask(std::string_view value, int keep_last);

// A stable pseudonym: lowercase hex HMAC-SHA256(key, normalised value),
// where normalisation removes all whitespace (so also trims; NBSP included)
// and lowercases, so that "QQ 12 34 56 C" and "qq123456c" give the same
// pseudonym. Lowercasing covers ASCII, Latin-1, Latin Extended-A, Greek and
// Cyrillic ("ŁĘCKA" = "łęcka"); there is no Unicode normalisation (a
// decomposed "á" differs from a composed one); invalid bytes are kept as
// they are. Changing any of this changes every pseudonym.
std::string pseudonym(std::string_view key, std::string_view value);

// "L8 0ZZ" / "l80zz" / "SW1A 1AA" -> "L8" / "L8" / "SW1A" (the outward
// code, upper case); nullopt if not a full UK postcode (one space or none
// between the parts; surrounding whitespace ignored).
std::optional<std::string> postcode_district(std::string_view postcode);

// "2025-01-06", "2025-01-06T09:44:05Z", "06/01/2025" or "6/1/2025" (UK day
// first, four-digit year) -> "2025-01"; nullopt if not a real date (leap
// years checked). Date-times are RFC 3339 with 'T', 't' or ' ', seconds and
// offset optional (vendor local times have none); the month is that of the
// date as written, not converted to UTC.
std::optional<std::string> date_to_month(std::string_view date);

// Date of birth (same formats) -> age band on `today_ms` (Unix ms, its UTC
// date): "under 16", "16-24", "25-34", "35-44", "45-54", "55-64", "65-74",
// "75+"; nullopt if not a date or in the future. Age in completed years: a
// birthday counts from its day, one born on 29 February turns a year older
// on 1 March in other years.
std::optional<std::string> age_band(std::string_view date_of_birth, std::int64_t today_ms);

} // namespace switchboard::pii
