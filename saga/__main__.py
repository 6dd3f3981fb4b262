from libs.service.app import main
from saga.bootstrap import definition

main(definition())
