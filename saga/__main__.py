from libs.service import main
from saga.bootstrap import definition

main(definition())
