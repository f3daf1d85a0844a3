using System.Management.Automation;
using KvmStorage.Core.Images;
using KvmStorage.Core.Access;
using KvmStorage.Core.Volumes;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.Volume;

/// <summary>Resize-Volume: grows (or, with -Shrink, shrinks) an image's virtual size.</summary>
[Cmdlet(VerbsCommon.Resize, "Volume", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium, DefaultParameterSetName = ByName)]
[OutputType(typeof(StorageVolume))]
public sealed class ResizeVolumeCommand : PoolFirstCmdlet
{
    /// <summary>The new virtual size in bytes (8GB, or '8G'). Give this or -Delta.</summary>
    [Parameter(Position = 2, ParameterSetName = ByName)]
    [Parameter(ParameterSetName = ByInput)]
    [Parameter(ParameterSetName = ByVolume)]
    [Parameter(ParameterSetName = ByPath)]
    [Parameter(ParameterSetName = ByLiteralPath)]
    [SizeTransformation]
    public ulong Size { get; set; }

    /// <summary>Bytes to add; with -Shrink, bytes to take away. Give this or -Size.</summary>
    [Parameter]
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
        ulong? size = MyInvocation.BoundParameters.ContainsKey(nameof(Size)) ? Size : null;
        ulong? delta = MyInvocation.BoundParameters.ContainsKey(nameof(Delta)) ? Delta : null;
        Preallocation? preallocation = MyInvocation.BoundParameters.ContainsKey(nameof(Preallocation)) ? Preallocation : null;
        ForEachVolume(spec =>
        {
            VolumeAction<StorageVolume> resize = Volumes.Resize(spec, size, delta, Shrink, preallocation);
            // Shrinking cuts data off for good: asked like a delete (High); growing is not.
            if (ShouldProcess(resize.Target, resize.Description, resize.DestroysData ? ConfirmImpact.High : ConfirmImpact.Medium))
            {
                StorageVolume resized = RunWithProgress("Resize-Volume", $"Resizing {System.IO.Path.GetFileName(resize.Target)}", resize.Run);
                if (PassThru)
                {
                    WriteObject(resized);
                }
            }
        });
    }
}
