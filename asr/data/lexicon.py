"""Word lists that fill the synthetic corpus's slots and its plain-English grammar.

All entries are already normalized (lowercase letters, apostrophe, space). Names mix common and
uncommon ones on purpose: slot values are what only the audio can tell, so they are where a
recognizer that leans on its language model fails (a 1.6 M-parameter LSTM RNN-T trained on
templated requests reached 0.03 nats per character yet 41% WER on held-out voices, decoding
whole utterances as an unrelated template: its prediction network had learned the templates).
"""


def _words(text: str) -> tuple[str, ...]:
  return tuple(text.split())


def _phrases(text: str) -> tuple[str, ...]:
  return tuple(p.strip() for p in text.split(",") if p.strip())


FIRST_NAMES = _words("""
  james mary john patricia robert jennifer michael linda william elizabeth david barbara richard
  susan joseph jessica thomas sarah charles karen daniel nancy matthew lisa anthony betty mark
  sandra donald ashley steven kimberly paul emily andrew donna joshua michelle kenneth carol kevin
  amanda brian melissa george deborah timothy stephanie ronald rebecca jason laura edward helen
  jeffrey sharon ryan cynthia jacob kathleen gary amy nicholas angela eric anna jonathan ruth
  stephen brenda larry pamela justin nicole scott katherine brandon samantha benjamin christine
  samuel emma gregory catherine alexander debra frank rachel patrick carolyn raymond janet jack
  maria dennis heather jerry diane tyler olivia aaron julie henry joyce douglas victoria peter
  kelly adam christina nathan joan zachary evelyn walter lauren kyle judith harold megan carl
  andrea jeremy cheryl keith hannah roger jacqueline gerald martha ethan gloria arthur teresa
  siobhan niamh aoife saoirse oisin ciaran padraig grainne xiomara thaddeus oluwaseun chidinma
  adebayo ngozi kwame akosua yaw esi tendai farai thandiwe sipho zanele lindiwe bongani anika
  priya arjun rohan ananya kavya ishaan vikram deepika rajesh sunita meera aditya lakshmi
  mei ling wei jun hiroshi yuki haruto sakura takumi akira minji jisoo seojun hyun anh linh
  thanh duc mateo santiago valentina camila sofia alejandro ximena joaquin ignacio guadalupe
  leilani keanu kalani makoa noelani ayasha takoda nayeli sequoia winona dakota cheyenne
  bartholomew cornelius ignatius percival evangeline philippa ottoline clementine persephone
  ophelia cosimo leopold ferdinand wilhelmina gertrude eustace mortimer barnaby octavia
  zephyr juniper sage rowan briar wren linnea astrid ingrid sigrid bjorn leif freya soren
  dagny eero aino ilmari paavo katya dmitri anastasia sergei svetlana yevgeny lyudmila bogdan
  radek zuzana milos jelena dragan vesna goran ivana tomasz agnieszka wojciech malgorzata
  fatima omar layla yusuf amira khalid zainab tariq noor hamza samira rashid imani jabari
  kofi amara chiamaka emeka obinna nkechi babajide folake tunde yetunde ebere chukwuma
  """)

LAST_NAMES = _words("""
  smith johnson williams brown jones garcia miller davis rodriguez martinez hernandez lopez
  gonzalez wilson anderson thomas taylor moore jackson martin lee perez thompson white harris
  sanchez clark ramirez lewis robinson walker young allen king wright scott torres nguyen hill
  flores green adams nelson baker hall rivera campbell mitchell carter roberts gomez phillips
  evans turner diaz parker cruz edwards collins reyes stewart morris morales murphy cook rogers
  gutierrez ortiz morgan cooper peterson bailey reed kelly howard ramos kim cox ward richardson
  watson brooks chavez wood james bennett gray mendoza ruiz hughes price alvarez castillo
  sanders patel myers long ross foster jimenez okonkwo adeyemi mensah osei achebe nwosu
  balogun okafor abernathy featherstonehaugh cholmondeley marjoribanks urquhart mcgillicuddy
  fitzgerald oshaughnessy macleod mackenzie lindqvist haugland vainio korhonen nieminen
  kowalczyk wisniewski przybylski novak dvorak horvath szabo kovacs popescu ionescu petrov
  ivanova sokolov volkov tanaka watanabe yamamoto nakamura kobayashi takahashi suzuki
  chen wang zhang liu yang huang zhao wu zhou xu sun ma zhu hu guo lin gupta sharma
  krishnan iyer chatterjee banerjee mukherjee reddy nair pillai menon desai mehta joshi
  castellanos villanueva quintero echeverria santamaria arriaga zubiri etxeberria
  papadopoulos georgiou konstantinidis oyelaran kahananui nakoa makoa runningwater
  """)

CITIES = _phrases("""
  london, paris, tokyo, new york, chicago, boston, seattle, denver, austin, atlanta, miami,
  toronto, vancouver, montreal, dublin, edinburgh, glasgow, cardiff, belfast, manchester,
  liverpool, birmingham, leeds, bristol, oxford, cambridge, berlin, munich, hamburg, vienna,
  zurich, geneva, madrid, barcelona, lisbon, rome, milan, naples, venice, florence, athens,
  istanbul, cairo, nairobi, lagos, accra, johannesburg, cape town, casablanca, marrakesh,
  dubai, mumbai, delhi, bangalore, chennai, kolkata, karachi, dhaka, bangkok, hanoi, manila,
  jakarta, singapore, kuala lumpur, seoul, busan, osaka, kyoto, beijing, shanghai, hong kong,
  taipei, sydney, melbourne, brisbane, perth, auckland, wellington, honolulu, anchorage,
  phoenix, tucson, albuquerque, santa fe, salt lake city, boise, portland, sacramento,
  san francisco, los angeles, san diego, las vegas, dallas, houston, san antonio, new orleans,
  nashville, memphis, louisville, cincinnati, cleveland, detroit, milwaukee, minneapolis,
  omaha, kansas city, saint louis, pittsburgh, philadelphia, baltimore, richmond, charleston,
  savannah, orlando, tampa, raleigh, buffalo, albany, providence, hartford, burlington,
  reykjavik, oslo, stockholm, helsinki, copenhagen, tallinn, riga, vilnius, warsaw, krakow,
  prague, budapest, bucharest, sofia, belgrade, zagreb, ljubljana, sarajevo, tbilisi, yerevan,
  baku, tashkent, almaty, ulaanbaatar, kathmandu, thimphu, colombo, lima, bogota, quito,
  santiago, buenos aires, montevideo, asuncion, la paz, caracas, havana, kingston, san juan,
  mexico city, guadalajara, monterrey, oaxaca, timbuktu, ouagadougou, antananarivo, kigali,
  addis ababa, dar es salaam, kinshasa, windhoek, gaborone, lusaka, harare, maputo
  """)

DEVICE_ROOMS = _phrases("""
  kitchen, living room, bedroom, bathroom, hallway, garage, office, study, basement, attic,
  nursery, porch, patio, dining room, guest room, laundry room, garden, playroom
  """)
DEVICE_KINDS = _phrases("""
  lights, lamp, fan, heater, thermostat, television, speaker, air conditioner, dehumidifier,
  kettle, coffee machine, blinds, curtains, plug, radiator, humidifier, projector, doorbell,
  sprinklers, oven, dishwasher, washing machine, vacuum, ceiling light, floor lamp, night light
  """)
# Devices people name themselves: the recognizer cannot guess these from the template.
DEVICE_GIVEN_NAMES = _phrases("""
  big bertha, lumos, sunny, the beast, moonbeam, sparky, old faithful, rosie, jeeves, hal,
  marvin, kitt, robbie, the oracle, disco ball, lava lamp, zeppelin, the glow worm, firefly,
  polaris, nimbus, cumulus, hephaestus, prometheus, bumblebee, gizmo, widget, doohickey,
  thingamajig, mister frosty, captain toasty, the snowman, aurora, borealis, nebula, quasar
  """)

SONG_WORDS = _words("""
  love heart night dream fire rain summer winter river ocean moon star sky road home city
  light shadow gold silver blue red midnight morning forever tonight yesterday tomorrow
  stranger angel wild broken golden electric paper glass stone velvet neon thunder lightning
  highway harbor island desert mountain valley garden echo whisper silence memory shadows
  butterfly hurricane diamond satellite rocket carousel lullaby serenade symphony rhapsody
  """)
GENRES = _phrases("""
  jazz, blues, rock, classical music, hip hop, country, reggae, folk, soul, funk, disco, punk,
  heavy metal, bluegrass, salsa, bossa nova, afrobeat, highlife, k pop, opera, lo fi, ambient,
  gospel, techno, house music, drum and bass, flamenco, celtic music, baroque, swing
  """)
PLAYLISTS = _phrases("""
  workout, road trip, chill, dinner party, focus, sleep, running, cooking, rainy day, morning,
  study, throwback, party, wedding, sunday, commute
  """)

GROCERIES = _phrases("""
  milk, eggs, bread, butter, cheese, yogurt, apples, bananas, oranges, lemons, limes, grapes,
  strawberries, blueberries, raspberries, avocados, tomatoes, potatoes, onions, garlic, carrots,
  celery, spinach, lettuce, kale, broccoli, cauliflower, cucumbers, peppers, mushrooms, zucchini,
  eggplant, asparagus, rice, pasta, noodles, flour, sugar, salt, pepper, olive oil, vinegar,
  honey, jam, peanut butter, cereal, oats, granola, coffee, tea, orange juice, sparkling water,
  chicken, beef, pork, salmon, tuna, shrimp, tofu, tempeh, lentils, chickpeas, black beans,
  kidney beans, quinoa, couscous, bulgur, tortillas, bagels, croissants, muffins, cookies,
  crackers, chips, popcorn, almonds, walnuts, cashews, pistachios, raisins, dates, figs,
  cinnamon, nutmeg, paprika, cumin, turmeric, saffron, cardamom, oregano, basil, thyme,
  rosemary, parsley, cilantro, ginger, soy sauce, ketchup, mustard, mayonnaise, salsa,
  hummus, pesto, kimchi, sauerkraut, miso, tahini, halloumi, feta, mozzarella, parmesan,
  toothpaste, shampoo, soap, paper towels, batteries, light bulbs, dish soap, sponges,
  aluminum foil, trash bags, dog food, cat litter, birdseed, sunscreen, band aids
  """)
LISTS = _phrases("shopping, grocery, to do, packing, reading, wish, errands, chores, gift")
TIMER_LABELS = _phrases("""
  pasta, rice, eggs, laundry, pizza, cookies, bread, tea, workout, nap, homework, meditation,
  parking, roast, pie, oatmeal, plank, stretching, brownies, casserole
  """)
LANDMARKS = _phrases("""
  the eiffel tower, mount everest, the empire state building, big ben, the statue of liberty,
  the great wall of china, the golden gate bridge, kilimanjaro, mount fuji, the burj khalifa,
  the leaning tower of pisa, stonehenge, the colosseum, machu picchu, the taj mahal,
  the sydney opera house, the space needle, the cn tower, ben nevis, mont blanc, denali
  """)
WEEKDAYS = _words("monday tuesday wednesday thursday friday saturday sunday")
MONTHS = _words("january february march april may june july august september october november december")

NOUNS = _words("""
  dog cat bird horse cow sheep goat pig rabbit fox wolf bear deer mouse owl eagle hawk crow
  swan duck goose frog snake turtle fish whale dolphin shark octopus crab bee ant spider
  butterfly beetle tree flower grass leaf branch root seed forest meadow hill mountain valley
  river lake ocean sea beach island desert cave cliff field farm garden park village town city
  country road street bridge tunnel tower castle palace church school library museum hospital
  station airport harbor market shop bakery kitchen room door window wall roof floor table
  chair bed lamp clock mirror picture book letter pen pencil paper map key box bag basket
  bottle cup plate bowl spoon fork knife kettle pot pan oven stove candle blanket pillow coat
  hat shoe boot glove scarf ring necklace watch umbrella ticket coin wallet phone camera radio
  piano guitar violin drum trumpet song story poem painting photograph film game puzzle ball
  kite bicycle car bus train boat ship plane rocket wagon truck tractor engine wheel machine
  computer keyboard screen cable battery wire robot doctor teacher farmer baker sailor pilot
  soldier artist singer writer painter poet student child boy girl woman man family friend
  neighbor stranger king queen prince princess knight giant wizard dragon ghost captain
  judge lawyer nurse driver scientist engineer gardener fisherman carpenter tailor merchant
  morning evening night day week month year season spring summer autumn winter storm rain
  snow wind cloud sun moon star sky thunder lightning fire smoke ice water stone sand gold
  silver iron wood glass bread cheese apple orange lemon cake soup tea coffee milk honey
  sugar salt dinner breakfast lunch party wedding holiday journey voyage adventure secret
  question answer idea plan reason problem mistake lesson message promise dream memory
  """)
ADJECTIVES = _words("""
  old young new ancient modern tiny small little big large huge enormous tall short long wide
  narrow deep shallow heavy light dark bright pale colorful red orange yellow green blue purple
  pink brown black white grey golden silver quiet loud noisy silent calm angry happy sad
  cheerful gloomy brave timid clever foolish wise curious lazy busy careful careless gentle
  fierce kind cruel friendly lonely proud humble rich poor strange ordinary famous secret
  hidden broken shiny dusty muddy clean dirty wet dry warm cold hot freezing sunny cloudy
  windy rainy stormy foggy early late quick slow sudden patient hungry thirsty tired sleepy
  nervous eager polite rude honest generous clumsy graceful elegant simple fancy plain
  wooden stone glass paper velvet woolen cotton leather crooked smooth rough soft hard sharp
  sweet sour bitter salty spicy fresh rotten ripe delicious fragrant mysterious magnificent
  """)
# (present third person, past) pairs for the plain-English grammar.
VERBS = tuple(tuple(p.split()) for p in _phrases("""
  finds found, sees saw, carries carried, paints painted, builds built, follows followed,
  watches watched, opens opened, closes closed, fixes fixed, loses lost, brings brought,
  sells sold, buys bought, hides hid, chases chased, visits visited, remembers remembered,
  forgets forgot, borrows borrowed, cleans cleaned, draws drew, writes wrote, reads read,
  catches caught, throws threw, pushes pushed, pulls pulled, lifts lifted, drops dropped,
  admires admired, describes described, discovers discovered, protects protected, guards
  guarded, feeds fed, wakes woke, calls called, greets greeted, meets met, helps helped,
  teaches taught, likes liked, loves loved, hates hated, misses missed, wants wanted, needs
  needed, keeps kept, leaves left, takes took, gives gave, sends sent, shows showed, packs
  packed, wraps wrapped, counts counted, measures measured, weighs weighed, tastes tasted,
  cooks cooked, bakes baked, mends mended, polishes polished, repairs repaired, studies
  studied, questions questioned, answers answered, trusts trusted, warns warned, thanks thanked
  """))
INTRANSITIVE = tuple(tuple(p.split()) for p in _phrases("""
  sleeps slept, sings sang, dances danced, laughs laughed, cries cried, waits waited, runs ran,
  walks walked, swims swam, flies flew, wanders wandered, shouts shouted, whispers whispered,
  smiles smiled, listens listened, rests rested, works worked, plays played, travels traveled,
  sits sat, stands stood, falls fell, jumps jumped, climbs climbed, hurries hurried
  """))
PREPOSITIONS = _words("near beside behind under above across through around inside outside past toward")
ADVERBS = _words("""
  slowly quickly quietly loudly happily sadly carefully suddenly gently softly proudly
  bravely calmly eagerly nervously patiently politely rarely often always never sometimes
  yesterday today tonight again together alone
  """)
