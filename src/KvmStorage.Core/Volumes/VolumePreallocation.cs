namespace KvmStorage.Core.Volumes;

/// <summary>How an existing image was allocated, so that growing it keeps to the same mode.</summary>
public static class VolumePreallocation
{
    /// <summary>
    /// A raw image whose blocks cover its whole length was preallocated: grow it with fallocate too. Everything else
    /// (sparse raw, qcow2, other formats) grows sparsely.
    /// </summary>
    public static Images.Preallocation Infer(StorageVolume volume)
    {
        ArgumentNullException.ThrowIfNull(volume);
        return volume.ImageFormat == Images.ImageFormat.Raw && volume.FileLength > 0 && volume.Allocation >= volume.FileLength
            ? Images.Preallocation.Falloc
            : Images.Preallocation.Off;
    }
}
