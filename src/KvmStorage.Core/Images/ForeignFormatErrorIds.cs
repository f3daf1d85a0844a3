namespace KvmStorage.Core.Images;

/// <summary>
/// Error ids of the readers and writer of the formats other than qcow2 and raw. Every malformed
/// file surfaces as a <c>KvmStorageException</c> of kind InvalidData with one of these ids.
/// </summary>
public static class ForeignFormatErrorIds
{
    /// <summary>A structure the header points at lies (partly) beyond the end of the file.</summary>
    public const string ImageTruncated = "ImageTruncated";

    public const string VmdkHeaderInvalid = "VmdkHeaderInvalid";
    public const string VmdkUnsupportedVersion = "VmdkUnsupportedVersion";
    public const string VmdkFooterInvalid = "VmdkFooterInvalid";
    public const string VmdkDescriptorInvalid = "VmdkDescriptorInvalid";
    public const string VmdkUnsupportedCreateType = "VmdkUnsupportedCreateType";
    public const string VmdkExtentInvalid = "VmdkExtentInvalid";

    public const string VdiHeaderInvalid = "VdiHeaderInvalid";

    public const string VhdFooterInvalid = "VhdFooterInvalid";
    public const string VhdChecksumMismatch = "VhdChecksumMismatch";
    public const string VhdDynamicHeaderInvalid = "VhdDynamicHeaderInvalid";

    public const string VhdxHeaderInvalid = "VhdxHeaderInvalid";
    public const string VhdxRegionTableInvalid = "VhdxRegionTableInvalid";
    public const string VhdxMetadataInvalid = "VhdxMetadataInvalid";
    public const string VhdxUnsupported = "VhdxUnsupported";

    public const string QcowHeaderInvalid = "QcowHeaderInvalid";
    public const string QcowBackingFileInvalid = "QcowBackingFileInvalid";

    public const string LuksHeaderInvalid = "LuksHeaderInvalid";

    public const string QedHeaderInvalid = "QedHeaderInvalid";
    public const string QedBackingFileInvalid = "QedBackingFileInvalid";

    public const string ParallelsHeaderInvalid = "ParallelsHeaderInvalid";
}
