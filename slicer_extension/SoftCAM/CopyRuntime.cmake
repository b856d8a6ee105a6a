# What the installed SoftCAM module needs beside SoftCAM.py and SoftCAMLib, copied from the
# monai_softcam source tree: the monai_softcam package (its Python source: no build step, no PyPI
# release needed) and the bundle configs that SoftCAMTest (Reload and Test, the ctest) builds its
# small test bundle from. Slicer puts the module's folder (qt-scripted-modules) on sys.path
# (qSlicerScriptedLoadableModuleFactory), so "import monai_softcam" then finds the copy.
#
# Used by CMakeLists.txt at configure time (include, with SOFTCAM_SOURCE_ROOT and
# SOFTCAM_DESTINATION set) and by tests/test_slicer_extension.py as a script:
#   cmake -DSOFTCAM_SOURCE_ROOT=<repo> -DSOFTCAM_DESTINATION=<dir> -P CopyRuntime.cmake
if(NOT SOFTCAM_SOURCE_ROOT OR NOT SOFTCAM_DESTINATION)
  message(FATAL_ERROR "CopyRuntime.cmake needs SOFTCAM_SOURCE_ROOT and SOFTCAM_DESTINATION")
endif()
if(NOT EXISTS "${SOFTCAM_SOURCE_ROOT}/monai_softcam/__init__.py")
  message(FATAL_ERROR "${SOFTCAM_SOURCE_ROOT} is not a monai_softcam source tree (no monai_softcam/__init__.py)")
endif()

file(GLOB_RECURSE _softcam_package RELATIVE "${SOFTCAM_SOURCE_ROOT}" "${SOFTCAM_SOURCE_ROOT}/monai_softcam/*.py")
foreach(_file IN LISTS _softcam_package)
  get_filename_component(_folder "${_file}" DIRECTORY)
  file(COPY "${SOFTCAM_SOURCE_ROOT}/${_file}" DESTINATION "${SOFTCAM_DESTINATION}/${_folder}")
endforeach()

file(GLOB _softcam_configs "${SOFTCAM_SOURCE_ROOT}/bundle/configs/*.yaml" "${SOFTCAM_SOURCE_ROOT}/bundle/configs/*.json"
     "${SOFTCAM_SOURCE_ROOT}/bundle/configs/*.conf")
file(COPY ${_softcam_configs} DESTINATION "${SOFTCAM_DESTINATION}/Resources/bundle/configs")
