"""Clinical concepts of the synthetic pediatric claims and the code strings that express them.

A *concept* is what happened clinically (otitis media, an albuterol fill, a DTaP shot); a site's
*coding dialect* decides which code string records it: an unspecified or a specific ICD-10-CM
code, an RxNorm product or one of its NDC packages, a lower or higher E&M level. This is what
makes sites differ in vocabulary while sharing clinical meaning (the groups of docs/architecture.md §2).

ICD-10-CM and CPT codes and descriptions are real; RxNorm ingredient codes are real, product
codes and NDC packages are realistic stand-ins (NDCs are derived from a hash of the product).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

# name -> ((code, description), ...); first entry unspecified, the rest specific variants.
DIAGNOSES: dict[str, tuple[tuple[str, str], ...]] = {
    "well_exam": (
        ("Z00.129", "Encounter for routine child health examination without abnormal findings"),
        ("Z00.121", "Encounter for routine child health examination with abnormal findings"),
    ),
    "immunization": (("Z23", "Encounter for immunization"),),
    "bmi_normal": (("Z68.52", "Body mass index [BMI] pediatric, 5th percentile to less than 85th percentile for age"),),
    "bmi_obese": (("Z68.54", "Body mass index [BMI] pediatric, greater than or equal to 95th percentile for age"),),
    "diet_counsel": (("Z71.3", "Dietary counseling and surveillance"),),
    "otitis": (
        ("H66.90", "Otitis media, unspecified, unspecified ear"),
        ("H66.91", "Otitis media, unspecified, right ear"),
        ("H66.92", "Otitis media, unspecified, left ear"),
        ("H66.93", "Otitis media, unspecified, bilateral"),
    ),
    "uri": (
        ("J06.9", "Acute upper respiratory infection, unspecified"),
        ("J00", "Acute nasopharyngitis [common cold]"),
    ),
    "pharyngitis": (("J02.9", "Acute pharyngitis, unspecified"), ("J02.0", "Streptococcal pharyngitis")),
    "bronchiolitis": (
        ("J21.9", "Acute bronchiolitis, unspecified"),
        ("J21.0", "Acute bronchiolitis due to respiratory syncytial virus"),
    ),
    "gastroenteritis": (
        ("K52.9", "Noninfective gastroenteritis and colitis, unspecified"),
        ("A08.4", "Viral intestinal infection, unspecified"),
        ("A08.11", "Acute gastroenteropathy due to Norwalk agent"),
    ),
    "conjunctivitis": (
        ("H10.9", "Unspecified conjunctivitis"),
        ("H10.33", "Unspecified acute conjunctivitis, bilateral"),
    ),
    "pneumonia": (
        ("J18.9", "Pneumonia, unspecified organism"),
        ("J12.9", "Viral pneumonia, unspecified"),
        ("J15.9", "Unspecified bacterial pneumonia"),
    ),
    "uti": (("N39.0", "Urinary tract infection, site not specified"),),
    "fever": (("R50.9", "Fever, unspecified"),),
    "croup": (("J05.0", "Acute obstructive laryngitis [croup]"),),
    "sinusitis": (("J01.90", "Acute sinusitis, unspecified"), ("J01.00", "Acute maxillary sinusitis, unspecified")),
    "influenza": (
        ("J11.1", "Influenza due to unidentified influenza virus with other respiratory manifestations"),
        ("J10.1", "Influenza due to other identified influenza virus with other respiratory manifestations"),
    ),
    "viral": (("B34.9", "Viral infection, unspecified"),),
    "covid": (("U07.1", "COVID-19"),),
    "injury": (
        ("T14.90XA", "Injury, unspecified, initial encounter"),
        ("S93.401A", "Sprain of unspecified ligament of right ankle, initial encounter"),
        ("S01.81XA", "Laceration without foreign body of other part of head, initial encounter"),
        ("S52.501A", "Unspecified fracture of the lower end of right radius, initial encounter for closed fracture"),
    ),
    "rash": (
        ("R21", "Rash and other nonspecific skin eruption"),
        ("L25.9", "Unspecified contact dermatitis, unspecified cause"),
    ),
    "abdominal_pain": (("R10.9", "Unspecified abdominal pain"), ("R10.84", "Generalized abdominal pain")),
    "headache": (("R51.9", "Headache, unspecified"),),
    "cough": (("R05.9", "Cough, unspecified"), ("R05.1", "Acute cough")),
    "bronchitis": (("J20.9", "Acute bronchitis, unspecified"),),
    "constipation": (("K59.00", "Constipation, unspecified"),),
    "eczema": (
        ("L20.9", "Atopic dermatitis, unspecified"),
        ("L20.84", "Intrinsic (allergic) eczema"),
        ("L20.89", "Other atopic dermatitis"),
    ),
    "allergic_rhinitis": (
        ("J30.9", "Allergic rhinitis, unspecified"),
        ("J30.2", "Other seasonal allergic rhinitis"),
        ("J30.1", "Allergic rhinitis due to pollen"),
        ("J30.81", "Allergic rhinitis due to animal (cat) (dog) hair and dander"),
    ),
    "food_allergy": (("Z91.018", "Allergy to other foods"), ("Z91.010", "Allergy to peanuts")),
    "wheeze": (("R06.2", "Wheezing"),),
    "bronchospasm": (("J98.01", "Acute bronchospasm"),),
    "asthma": (
        ("J45.909", "Unspecified asthma, uncomplicated"),
        ("J45.20", "Mild intermittent asthma, uncomplicated"),
        ("J45.30", "Mild persistent asthma, uncomplicated"),
        ("J45.40", "Moderate persistent asthma, uncomplicated"),
    ),
    "asthma_exacerbation": (
        ("J45.901", "Unspecified asthma with (acute) exacerbation"),
        ("J45.21", "Mild intermittent asthma with (acute) exacerbation"),
        ("J45.31", "Mild persistent asthma with (acute) exacerbation"),
        ("J45.41", "Moderate persistent asthma with (acute) exacerbation"),
    ),
    "adhd": (
        ("F90.9", "Attention-deficit hyperactivity disorder, unspecified type"),
        ("F90.0", "Attention-deficit hyperactivity disorder, predominantly inattentive type"),
        ("F90.1", "Attention-deficit hyperactivity disorder, predominantly hyperactive type"),
        ("F90.2", "Attention-deficit hyperactivity disorder, combined type"),
    ),
    "behavior": (("R46.89", "Other symptoms and signs involving appearance and behavior"),),
    "obesity": (("E66.9", "Obesity, unspecified"), ("E66.01", "Morbid (severe) obesity due to excess calories")),
    "t1d": (
        ("E10.9", "Type 1 diabetes mellitus without complications"),
        ("E10.65", "Type 1 diabetes mellitus with hyperglycemia"),
    ),
    "dka": (("E10.10", "Type 1 diabetes mellitus with ketoacidosis without coma"),),
    "polydipsia": (("R63.1", "Polydipsia"),),
    "polyuria": (("R35.8", "Other polyuria"),),
    "weight_loss": (("R63.4", "Abnormal weight loss"),),
    "depression": (
        ("F32.A", "Depression, unspecified"),
        ("F32.0", "Major depressive disorder, single episode, mild"),
        ("F32.1", "Major depressive disorder, single episode, moderate"),
        ("F33.1", "Major depressive disorder, recurrent, moderate"),
    ),
    "anxiety": (
        ("F41.9", "Anxiety disorder, unspecified"),
        ("F41.1", "Generalized anxiety disorder"),
        ("F93.0", "Separation anxiety disorder of childhood"),
    ),
    "insomnia": (("G47.00", "Insomnia, unspecified"),),
    "emotional": (("R45.89", "Other symptoms and signs involving emotional state"),),
    "suicidal_ideation": (("R45.851", "Suicidal ideations"),),
    "family_conflict": (("Z62.820", "Parent-biological child conflict"),),
    "self_harm": (
        ("T14.91XA", "Suicide attempt, initial encounter"),
        ("T39.1X2A", "Poisoning by 4-Aminophenol derivatives, intentional self-harm, initial encounter"),
        ("X78.9XXA", "Intentional self-harm by unspecified sharp object, initial encounter"),
        ("T43.222A", "Poisoning by selective serotonin reuptake inhibitors, intentional self-harm, initial encounter"),
    ),
}

#: Three-character ICD-10-CM categories (the default diagnosis groups) with their titles.
ICD_CATEGORIES: dict[str, str] = {
    "A08": "Viral and other specified intestinal infections",
    "B34": "Viral infection of unspecified site",
    "E10": "Type 1 diabetes mellitus",
    "E66": "Overweight and obesity",
    "F32": "Depressive episode",
    "F33": "Major depressive disorder, recurrent",
    "F41": "Other anxiety disorders",
    "F90": "Attention-deficit hyperactivity disorders",
    "F93": "Emotional disorders with onset specific to childhood",
    "G47": "Sleep disorders",
    "H10": "Conjunctivitis",
    "H66": "Suppurative and unspecified otitis media",
    "J00": "Acute nasopharyngitis",
    "J01": "Acute sinusitis",
    "J02": "Acute pharyngitis",
    "J05": "Acute obstructive laryngitis and epiglottitis",
    "J06": "Acute upper respiratory infections of multiple and unspecified sites",
    "J10": "Influenza due to other identified influenza virus",
    "J11": "Influenza due to unidentified influenza virus",
    "J12": "Viral pneumonia",
    "J15": "Bacterial pneumonia",
    "J18": "Pneumonia, unspecified organism",
    "J20": "Acute bronchitis",
    "J21": "Acute bronchiolitis",
    "J30": "Vasomotor and allergic rhinitis",
    "J45": "Asthma",
    "J98": "Other respiratory disorders",
    "K52": "Other noninfective gastroenteritis and colitis",
    "K59": "Other functional intestinal disorders",
    "L20": "Atopic dermatitis",
    "L25": "Unspecified contact dermatitis",
    "N39": "Other disorders of urinary system",
    "R05": "Cough",
    "R06": "Abnormalities of breathing",
    "R10": "Abdominal and pelvic pain",
    "R21": "Rash and other nonspecific skin eruption",
    "R35": "Polyuria",
    "R45": "Symptoms and signs involving emotional state",
    "R46": "Symptoms and signs involving appearance and behavior",
    "R50": "Fever of other and unknown origin",
    "R51": "Headache",
    "R63": "Symptoms and signs concerning food and fluid intake",
    "S01": "Open wound of head",
    "S52": "Fracture of forearm",
    "S93": "Dislocation and sprain of joints and ligaments at ankle, foot and toe level",
    "T14": "Injury of unspecified body region",
    "T39": "Poisoning by nonopioid analgesics, antipyretics and antirheumatics",
    "T43": "Poisoning by psychotropic drugs",
    "U07": "Emergency use of U07",
    "X78": "Intentional self-harm by sharp object",
    "Z00": "Encounter for general examination without complaint",
    "Z23": "Encounter for immunization",
    "Z62": "Problems related to upbringing",
    "Z68": "Body mass index [BMI]",
    "Z71": "Persons encountering health services for other counseling and medical advice",
    "Z91": "Personal risk factors, not elsewhere classified",
}

# name -> ((code, description, base weight), ...): alternatives whose choice a site's E&M habit shifts.
PROCEDURES: dict[str, tuple[tuple[str, str, float], ...]] = {
    "office_em": (
        (
            "99212",
            "Office or other outpatient visit, established patient, straightforward medical decision making",
            0.12,
        ),
        ("99213", "Office or other outpatient visit, established patient, low level of medical decision making", 0.55),
        (
            "99214",
            "Office or other outpatient visit, established patient, moderate level of medical decision making",
            0.28,
        ),
        ("99215", "Office or other outpatient visit, established patient, high level of medical decision making", 0.05),
    ),
    "er_em": (
        ("99282", "Emergency department visit, straightforward medical decision making", 0.15),
        ("99283", "Emergency department visit, low level of medical decision making", 0.40),
        ("99284", "Emergency department visit, moderate level of medical decision making", 0.35),
        ("99285", "Emergency department visit, high level of medical decision making", 0.10),
    ),
    "ip_em": (
        (
            "99221",
            "Initial hospital inpatient or observation care, straightforward or low level of medical decision making",
            0.3,
        ),
        ("99222", "Initial hospital inpatient or observation care, moderate level of medical decision making", 0.4),
        ("99223", "Initial hospital inpatient or observation care, high level of medical decision making", 0.3),
    ),
    "discharge": (("99238", "Hospital inpatient or observation discharge day management; 30 minutes or less", 1.0),),
    "prev_infant": (
        (
            "99391",
            "Periodic comprehensive preventive medicine reevaluation, established patient; infant (age younger than 1 year)",
            1.0,
        ),
    ),
    "prev_early": (
        (
            "99392",
            "Periodic comprehensive preventive medicine reevaluation, established patient; early childhood (age 1 through 4 years)",
            1.0,
        ),
    ),
    "prev_late": (
        (
            "99393",
            "Periodic comprehensive preventive medicine reevaluation, established patient; late childhood (age 5 through 11 years)",
            1.0,
        ),
    ),
    "prev_adolescent": (
        (
            "99394",
            "Periodic comprehensive preventive medicine reevaluation, established patient; adolescent (age 12 through 17 years)",
            1.0,
        ),
    ),
    "prev_adult": (
        ("99395", "Periodic comprehensive preventive medicine reevaluation, established patient; 18-39 years", 1.0),
    ),
    "vax_hepb": (
        (
            "90744",
            "Hepatitis B vaccine (HepB), pediatric/adolescent dosage, 3 dose schedule, for intramuscular use",
            1.0,
        ),
    ),
    "vax_dtap": (
        (
            "90700",
            "Diphtheria, tetanus toxoids, and acellular pertussis vaccine (DTaP), when administered to individuals younger than 7 years, for intramuscular use",
            1.0,
        ),
    ),
    "vax_ipv": (("90713", "Poliovirus vaccine, inactivated (IPV), for subcutaneous or intramuscular use", 1.0),),
    "vax_hib": (
        (
            "90648",
            "Haemophilus influenzae type b vaccine (Hib), PRP-T conjugate, 4 dose schedule, for intramuscular use",
            1.0,
        ),
    ),
    "vax_pcv": (("90670", "Pneumococcal conjugate vaccine, 13 valent (PCV13), for intramuscular use", 1.0),),
    "vax_rota": (("90680", "Rotavirus vaccine, pentavalent (RV5), 3 dose schedule, live, for oral use", 1.0),),
    "vax_mmr": (("90707", "Measles, mumps and rubella virus vaccine (MMR), live, for subcutaneous use", 1.0),),
    "vax_varicella": (("90716", "Varicella virus vaccine (VAR), live, for subcutaneous use", 1.0),),
    "vax_hepa": (
        (
            "90633",
            "Hepatitis A vaccine (HepA), pediatric/adolescent dosage-2 dose schedule, for intramuscular use",
            1.0,
        ),
    ),
    "vax_flu": (
        (
            "90686",
            "Influenza virus vaccine, quadrivalent (IIV4), split virus, preservative free, 0.5 mL dosage, for intramuscular use",
            1.0,
        ),
    ),
    "vax_tdap": (
        (
            "90715",
            "Tetanus, diphtheria toxoids and acellular pertussis vaccine (Tdap), when administered to individuals 7 years or older, for intramuscular use",
            1.0,
        ),
    ),
    "vax_hpv": (
        (
            "90651",
            "Human Papillomavirus vaccine types 6, 11, 16, 18, 31, 33, 45, 52, 58, nonavalent (9vHPV), 2 or 3 dose schedule, for intramuscular use",
            1.0,
        ),
    ),
    "vax_menacwy": (
        (
            "90734",
            "Meningococcal conjugate vaccine, serogroups A, C, W, Y, quadrivalent (MenACWY), for intramuscular use",
            1.0,
        ),
    ),
    "vax_admin": (
        (
            "90460",
            "Immunization administration through 18 years of age via any route of administration, with counseling; first or only component",
            1.0,
        ),
    ),
    "dev_screen": (
        ("96110", "Developmental screening, with scoring and documentation, per standardized instrument", 1.0),
    ),
    "behav_assess": (
        (
            "96127",
            "Brief emotional/behavioral assessment, with scoring and documentation, per standardized instrument",
            1.0,
        ),
    ),
    "vision_screen": (("99173", "Screening test of visual acuity, quantitative, bilateral", 1.0),),
    "hearing_screen": (("92551", "Screening test, pure tone, air only", 1.0),),
    "lead_test": (("83655", "Lead", 1.0),),
    "hemoglobin": (("85018", "Blood count; hemoglobin (Hgb)", 1.0),),
    "strep_test": (
        (
            "87880",
            "Infectious agent antigen detection by immunoassay with direct optical observation; Streptococcus, group A",
            1.0,
        ),
    ),
    "flu_test": (
        ("87804", "Infectious agent antigen detection by immunoassay with direct optical observation; Influenza", 1.0),
    ),
    "covid_test": (
        ("87635", "Infectious agent detection by nucleic acid; SARS-CoV-2 (COVID-19), amplified probe technique", 1.0),
    ),
    "urinalysis": (("81002", "Urinalysis, by dip stick or tablet reagent; non-automated, without microscopy", 1.0),),
    "urine_culture": (("87086", "Culture, bacterial; quantitative colony count, urine", 1.0),),
    "chest_xray": (("71046", "Radiologic examination, chest; 2 views", 1.0),),
    "spirometry": (
        (
            "94010",
            "Spirometry, including graphic record, total and timed vital capacity, expiratory flow rate measurement(s)",
            1.0,
        ),
    ),
    "nebulizer": (("94640", "Pressurized or nonpressurized inhalation treatment for acute airway obstruction", 1.0),),
    "glucose_test": (("82947", "Glucose; quantitative, blood (except reagent strip)", 1.0),),
    "a1c": (("83036", "Hemoglobin; glycosylated (A1C)", 1.0),),
    "lipid_panel": (("80061", "Lipid panel", 1.0),),
    "psych_eval": (("90791", "Psychiatric diagnostic evaluation", 1.0),),
    "psychotherapy": (
        ("90834", "Psychotherapy, 45 minutes with patient", 0.6),
        ("90837", "Psychotherapy, 60 minutes with patient", 0.4),
    ),
    "wound_repair": (
        (
            "12001",
            "Simple repair of superficial wounds of scalp, neck, axillae, external genitalia, trunk and/or extremities; 2.5 cm or less",
            1.0,
        ),
    ),
    "xray_ankle": (("73610", "Radiologic examination, ankle; complete, minimum of 3 views", 1.0),),
    "injection": (("96372", "Therapeutic, prophylactic, or diagnostic injection; subcutaneous or intramuscular", 1.0),),
}

# name -> (ingredient RxCUI, ingredient name, product RxCUI, product description)
DRUGS: dict[str, tuple[str, str, str, str]] = {
    "amoxicillin": ("723", "amoxicillin", "308189", "amoxicillin 400 MG in 5 mL Oral Suspension"),
    "amox_clav": (
        "19711",
        "amoxicillin / clavulanate",
        "617993",
        "amoxicillin 600 MG / clavulanate 42.9 MG in 5 mL Oral Suspension",
    ),
    "azithromycin": ("18631", "azithromycin", "141963", "azithromycin 200 MG in 5 mL Oral Suspension"),
    "cefdinir": ("25037", "cefdinir", "309054", "cefdinir 250 MG in 5 mL Oral Suspension"),
    "cephalexin": ("2231", "cephalexin", "309114", "cephalexin 250 MG in 5 mL Oral Suspension"),
    "tmp_smx": (
        "10831",
        "sulfamethoxazole / trimethoprim",
        "198335",
        "sulfamethoxazole 200 MG / trimethoprim 40 MG in 5 mL Oral Suspension",
    ),
    "ceftriaxone": ("2193", "ceftriaxone", "1665021", "ceftriaxone 1000 MG Injection"),
    "ibuprofen": ("5640", "ibuprofen", "197803", "ibuprofen 100 MG in 5 mL Oral Suspension"),
    "acetaminophen": ("161", "acetaminophen", "307668", "acetaminophen 160 MG in 5 mL Oral Suspension"),
    "ondansetron": ("26225", "ondansetron", "312086", "ondansetron 4 MG Disintegrating Oral Tablet"),
    "oseltamivir": ("260101", "oseltamivir", "725105", "oseltamivir 6 MG/ML Oral Suspension"),
    "erythromycin_eye": ("4053", "erythromycin", "310155", "erythromycin 5 MG/GM Ophthalmic Ointment"),
    "mupirocin": ("42372", "mupirocin", "106346", "mupirocin 2 % Topical Ointment"),
    "peg3350": (
        "221147",
        "polyethylene glycol 3350",
        "876193",
        "polyethylene glycol 3350 17000 MG Powder for Oral Solution",
    ),
    "albuterol": ("435", "albuterol", "745679", "albuterol 0.09 MG/ACTUAT Metered Dose Inhaler, 200 ACTUAT"),
    "albuterol_neb": ("435", "albuterol", "245314", "albuterol 0.83 MG/ML Inhalation Solution"),
    "prednisolone": ("8638", "prednisolone", "312617", "prednisolone 15 MG in 5 mL Oral Solution"),
    "fluticasone": ("41126", "fluticasone", "896188", "fluticasone propionate 0.044 MG/ACTUAT Metered Dose Inhaler"),
    "budesonide": ("19831", "budesonide", "351109", "budesonide 0.25 MG/ML Inhalation Suspension"),
    "montelukast": ("88249", "montelukast", "997488", "montelukast 4 MG Chewable Tablet"),
    "cetirizine": ("20610", "cetirizine", "1014676", "cetirizine hydrochloride 1 MG/ML Oral Solution"),
    "hydrocortisone_top": ("5492", "hydrocortisone", "106258", "hydrocortisone 2.5 % Topical Cream"),
    "triamcinolone_top": ("10759", "triamcinolone", "106228", "triamcinolone acetonide 0.1 % Topical Cream"),
    "methylphenidate": (
        "6901",
        "methylphenidate",
        "1091170",
        "methylphenidate hydrochloride 18 MG Extended Release Oral Tablet",
    ),
    "amphetamine": (
        "725",
        "amphetamine",
        "861221",
        "dextroamphetamine / amphetamine mixed salts 10 MG Extended Release Oral Capsule",
    ),
    "guanfacine": ("40114", "guanfacine", "862013", "guanfacine 1 MG 24HR Extended Release Oral Tablet"),
    "insulin_lispro": ("86009", "insulin lispro", "1652639", "insulin lispro 100 UNT/ML Injectable Solution"),
    "insulin_glargine": ("274783", "insulin glargine", "1731315", "insulin glargine 100 UNT/ML Pen Injector"),
    "sertraline": ("36437", "sertraline", "312940", "sertraline 50 MG Oral Tablet"),
    "fluoxetine": ("4493", "fluoxetine", "310385", "fluoxetine 20 MG Oral Capsule"),
    "escitalopram": ("321988", "escitalopram", "349332", "escitalopram 10 MG Oral Tablet"),
}

NDC_PACKAGES_PER_PRODUCT = 2
VISIT_TYPES = ("OP", "ER", "IP", "RX")


def ndc_codes(product: str) -> tuple[str, ...]:
    """Deterministic 5-4-2 NDC package codes for a product (stand-ins, stable across runs)."""
    codes = []
    for package in range(NDC_PACKAGES_PER_PRODUCT):
        digest = int(hashlib.sha256(f"{product}/{package}".encode()).hexdigest()[:15], 16)
        labeler, rest = divmod(digest, 10**6)
        codes.append(f"NDC/{labeler % 100000:05d}-{rest // 100:04d}-{rest % 100:02d}")
    return tuple(codes)


@dataclass(frozen=True)
class Catalog:
    """Concepts as integer ids, each with up to `width` candidate codes.

    `kind[c]` in {"dx", "px", "rx", "visit"}; `codes[c, j]` indexes `code_strings` (-1 = unused);
    `weights[c, j]` is the base weight of candidate j before a site's dialect reshapes it.
    """

    names: tuple[str, ...]
    kind: np.ndarray
    codes: np.ndarray
    weights: np.ndarray
    code_strings: tuple[str, ...]
    descriptions: dict[str, str]
    parents: dict[str, str]

    def id(self, name: str) -> int:
        return self.names.index(name)

    def ids(self, *names: str) -> np.ndarray:
        return np.array([self.names.index(n) for n in names], dtype=np.int64)


def build_catalog() -> Catalog:
    names: list[str] = []
    kinds: list[str] = []
    candidates: list[list[str]] = []
    weights: list[list[float]] = []
    descriptions: dict[str, str] = {}
    parents: dict[str, str] = {}

    for visit_type in VISIT_TYPES:
        code = f"VISIT/{visit_type}"
        names.append(f"visit_{visit_type.lower()}")
        kinds.append("visit")
        candidates.append([code])
        weights.append([1.0])
        descriptions[code] = {
            "OP": "Outpatient visit",
            "ER": "Emergency department visit",
            "IP": "Inpatient stay",
            "RX": "Pharmacy dispensing",
        }[visit_type]
    for name, variants in DIAGNOSES.items():
        names.append(name)
        kinds.append("dx")
        codes = [f"ICD10CM/{c}" for c, _ in variants]
        candidates.append(codes)
        weights.append([1.0] * len(codes))
        for code, (raw, text) in zip(codes, variants, strict=True):
            descriptions[code] = text
            parents[code] = f"ICD10CM/{raw[:3]}"
    for category, title in ICD_CATEGORIES.items():
        descriptions[f"ICD10CM/{category}"] = title
    for name, variants in PROCEDURES.items():
        names.append(name)
        kinds.append("px")
        codes = [f"CPT/{c}" for c, _, _ in variants]
        candidates.append(codes)
        weights.append([w for _, _, w in variants])
        for code, (_, text, _) in zip(codes, variants, strict=True):
            descriptions[code] = text
    for name, (ingredient, ingredient_name, product, text) in DRUGS.items():
        names.append(name)
        kinds.append("rx")
        codes = [f"RXNORM/{product}", *ndc_codes(product)]
        candidates.append(codes)
        weights.append([1.0] * len(codes))
        descriptions[f"RXNORM/{ingredient}"] = ingredient_name
        for code in codes:
            descriptions[code] = text
            parents[code] = f"RXNORM/{ingredient}"

    code_strings = tuple(sorted({c for cands in candidates for c in cands}))
    index = {c: i for i, c in enumerate(code_strings)}
    width = max(len(c) for c in candidates)
    code_matrix = np.full((len(names), width), -1, dtype=np.int64)
    weight_matrix = np.zeros((len(names), width), dtype=np.float64)
    for i, (cands, ws) in enumerate(zip(candidates, weights, strict=True)):
        code_matrix[i, : len(cands)] = [index[c] for c in cands]
        weight_matrix[i, : len(ws)] = ws
    return Catalog(tuple(names), np.array(kinds), code_matrix, weight_matrix, code_strings, descriptions, parents)
