// The ISO 4217 alphabetic codes `currency` is checked against, as data in this one place: List One
// (current currencies and funds) as the maintenance agency, SIX, publishes it and the npm package
// `currency-codes` 2.2.0 ships it (`iso-4217-list-one.xml`), plus codes added since (`XCG`, which
// replaced `ANG` on 31 March 2025). To update: add the `<Ccy>` codes of a newer List One and set
// ISO_4217_PUBLISHED (docs/ingest.md names it). Never remove a withdrawn code (such as `ANG`):
// entries accepted with it may still be in the streams, and workers validate again on decode.

/** The publication of ISO 4217 List One these codes are taken from (its `Pblshd`). */
export const ISO_4217_PUBLISHED = '2024-06-25';

/**
 * Every alphabetic code of that List One, plus codes added to the list since. Codes are only
 * added: a stream entry accepted with a code that a later list withdraws must still decode.
 */
export const ISO_4217_CODES: readonly string[] = (
  'AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD BTN BWP ' +
  'BYN BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB ' +
  'EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY ' +
  'KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR ' +
  'MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB ' +
  'RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD ' +
  'TZS UAH UGX USD USN UYI UYU UYW UZS VED VES VND VUV WST XAF XAG XAU XBA XBB XBC XBD XCD XCG XDR ' +
  'XOF XPD XPF XPT XSU XTS XUA XXX YER ZAR ZMW ZWG'
).split(' ');
