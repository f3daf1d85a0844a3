using System.Management.Automation;
using KvmStorage.Core.Hosting;
using KvmStorage.Core.Volumes;

namespace KvmStorage.Infrastructure;

/// <summary>Turns a -Volume argument into a fresh volume object (objects may be stale, so they are read again).</summary>
internal static class VolumeResolver
{
    public static StorageVolume Resolve(PSCmdlet cmdlet, IKvmHost host, VolumeReference reference) =>
        reference.Volume is { } volume
            ? host.GetVolumeByPath(volume.LocalPath)
            : host.GetVolumeByPath(cmdlet.GetUnresolvedProviderPathFromPSPath(reference.Path));
}
