package install

// Header tags the hostile packages of the tests replace (rpmtag.h), and
// the size of the lead.
const (
	rpmLeadSize          = 96
	sigSHA256            = 273
	tagFileSizes         = 1028
	tagFileModes         = 1030
	tagFileDigests       = 1035
	tagFileLinkTos       = 1036
	tagPrefixes          = 1098
	tagBaseNames         = 1117
	tagDirNames          = 1118
	tagPayloadCompressor = 1125
	tagPayloadDigest     = 5092
)
