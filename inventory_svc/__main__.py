from inventory_svc.bootstrap import definition
from libs.service import main

main(definition())
