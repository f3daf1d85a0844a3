using System.Management.Automation;
using KvmStorage.Core.Images;
using KvmStorage.Core.Sizes;
using KvmStorage.Core.Volumes;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.Volume;

/// <summary>Resize-Volume: grows (or, with -Shrink, shrinks) an image's virtual size.</summary>
[Cmdlet(VerbsCommon.Resize, "Volume", SupportsShouldProcess = true, DefaultParameterSetName = ByNameSize)]
[OutputType(typeof(StorageVolume))]
public sealed class ResizeVolumeCommand : KvmCmdlet
{
    private const string ByNameSize = "ByNameSize";
    private const string ByNameDelta = "ByNameDelta";
    private const string ByObjectSize = "ByObjectSize";
    private const string ByObjectDelta = "ByObjectDelta";

    [Parameter(Mandatory = true, Position = 0, ParameterSetName = ByNameSize, ValueFromPipelineByPropertyName = true)]
    [Parameter(Mandatory = true, Position = 0, ParameterSetName = ByNameDelta, ValueFromPipelineByPropertyName = true)]
    [ArgumentCompleter(typeof(PoolNameCompleter))]
    public PoolReference Pool { get; set; } = null!;

    [Parameter(Mandatory = true, Position = 1, ParameterSetName = ByNameSize, ValueFromPipelineByPropertyName = true)]
    [Parameter(Mandatory = true, Position = 1, ParameterSetName = ByNameDelta, ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(VolumeNameCompleter))]
    public string Name { get; set; } = string.Empty;

    [Parameter(Mandatory = true, ParameterSetName = ByObjectSize, ValueFromPipeline = true)]
    [Parameter(Mandatory = true, ParameterSetName = ByObjectDelta, ValueFromPipeline = true)]
    public StorageVolume InputObject { get; set; } = null!;

    /// <summary>The new virtual size in bytes (8GB, or '8G').</summary>
    [Parameter(Mandatory = true, Position = 2, ParameterSetName = ByNameSize)]
    [Parameter(Mandatory = true, ParameterSetName = ByObjectSize)]
    [SizeTransformation]
    public ulong Size { get; set; }

    /// <summary>Bytes to add; with -Shrink, bytes to take away.</summary>
    [Parameter(Mandatory = true, ParameterSetName = ByNameDelta)]
    [Parameter(Mandatory = true, ParameterSetName = ByObjectDelta)]
    [SizeTransformation]
    public ulong Delta { get; set; }

    /// <summary>Allow a smaller size: data past the new end is lost (qcow2 refuses when clusters there are allocated).</summary>
    [Parameter]
    public SwitchParameter Shrink { get; set; }

    /// <summary>How the grown part is allocated: Off, Metadata (qcow2), Falloc, Full; by default as the image was (a fully allocated raw image stays fully allocated).</summary>
    [Parameter]
    public Preallocation Preallocation { get; set; }

    /// <summary>Emit the resized volume.</summary>
    [Parameter]
    public SwitchParameter PassThru { get; set; }

    protected override void ProcessRecord()
    {
        string pool = InputObject?.Pool ?? Pool?.Name ?? string.Empty;
        string name = InputObject?.Name ?? Name;
        RunForItem(name, () =>
        {
            StorageVolume volume = KvmHost.GetVolume(pool, name);
            ulong size;
            if (ParameterSetName is ByNameDelta or ByObjectDelta)
            {
                if (Shrink)
                {
                    size = Delta > volume.Capacity
                        ? throw new Core.Errors.KvmStorageException(Core.Errors.ErrorKind.InvalidArgument, VolumeErrorIds.InvalidSize, $"Cannot shrink {ByteSize.Format(volume.Capacity)} by {ByteSize.Format(Delta)}.", name)
                        : volume.Capacity - Delta;
                }
                else
                {
                    size = volume.Capacity + Delta < volume.Capacity
                        ? throw new Core.Errors.KvmStorageException(Core.Errors.ErrorKind.InvalidArgument, VolumeErrorIds.InvalidSize, "The new size overflows.", name)
                        : volume.Capacity + Delta;
                }
            }
            else
            {
                size = Size;
            }

            string action = size < volume.Capacity ? "Shrink" : "Grow";
            if (ShouldProcess(volume.Path, $"{action} from {ByteSize.Format(volume.Capacity)} to {ByteSize.Format(size)}"))
            {
                Preallocation mode = MyInvocation.BoundParameters.ContainsKey(nameof(Preallocation)) ? Preallocation : VolumePreallocation.Infer(volume);
                var options = new ImageResizeOptions { AllowShrink = Shrink, Preallocation = mode };
                StorageVolume resized = RunWithProgress("Resize-Volume", $"Resizing {volume.Name}", (progress, token) => KvmHost.ResizeVolume(pool, name, size, options, progress, token));
                if (PassThru)
                {
                    WriteObject(resized);
                }
            }
        });
    }
}
