#pragma once

// Normal forms of the identifiers a subject access search compares, so that
// "+44 7700 900123", "07700900123" and "(0)7700-900 123" are one number. Each
// returns an empty string for text that is not that kind of identifier.

#include <string>
#include <string_view>

namespace switchboard::governance {

// UK numbers in national form, digits only ("07700900123"): +44, 0044 and
// 44 prefixes, "(0)", spaces, dashes, dots and brackets are dropped. Other
// international numbers keep a leading '+' and their digits. Fewer than 7
// digits: not a phone number.
std::string normal_phone(std::string_view text);
// Upper case, no spaces ("QQ123456C"). Must look like a NINO (two letters,
// six digits, an optional suffix letter A-D).
std::string normal_nino(std::string_view text);
// Upper case, no spaces ("LS14AB"); 5 to 7 letters and digits.
std::string normal_postcode(std::string_view text);
// Trimmed, lower case; must hold one '@' with text either side.
std::string normal_email(std::string_view text);
// Lower case words separated by one space; punctuation other than hyphens
// and apostrophes dropped ("O'Neill,  JANE" -> "o'neill jane").
std::string normal_name(std::string_view text);
// References (account, claim, case numbers; vendor ids): upper case with
// spaces, dashes and slashes dropped.
std::string normal_reference(std::string_view text);

// Two NINOs match when their first eight characters do: the suffix letter
// (A-D) does not tell people apart, and systems often drop it.
bool nino_matches(std::string_view a, std::string_view b);

} // namespace switchboard::governance
